"""charrnn export: file sizes, the bits/char the web page's fp16/int8 weights cost, and the speed of
examples/onnx_sample.py's loop and of the web page (headless Chromium, if installed) against charrnn's
own sampler (same model, CPU, alternated, best of three).

    python benchmarks/export.py RUN_DIR [--length 2000] [--threads 1]

RUN_DIR: a trained run (its best.pt and its corpus's validation split). The quantised figures are
Python's evaluation of the very weights the page runs (charrnn.export.weights.dequantized).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np
import torch

import charrnn
from charrnn.export.weights import dequantized
from quality_per_time import cpu_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--length", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1, help="for torch and onnxruntime alike (1: steady on a busy machine)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = charrnn.load(a.run, device="cpu")
    print(f"{cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads; {m!r}")
    out = tempfile.mkdtemp()
    print(f"\n| file | MiB |\n|---|---:|\n| best.pt (with optimizer and training state) | "
          f"{os.path.getsize(m.path) / 2 ** 20:.2f} |")
    for fmt, kw, name in (("pt", {}, "weights only, fp32"), ("pt", {"half": True}, "weights only, --half"),
                          ("onnx", {}, "ONNX"), ("html", {}, "web page, fp32"),
                          ("html", {"quantize": "fp16"}, "web page, --quantize fp16"),
                          ("html", {"quantize": "int8"}, "web page, --quantize int8")):
        r = m.export(os.path.join(out, f"m-{len(os.listdir(out))}.{fmt}"), fmt, **kw)
        print(f"| {name} | {r['bytes'] / 2 ** 20:.2f} |")
    print("\n| weights | val bits/char | cost |\n|---|---:|---:|")
    original, base = m.module, None
    for q in (None, "fp16", "int8"):
        m.module = dequantized(original, q)
        bpc = m.evaluate(split="val", precision="fp32", progress=False)["bpc"]
        base = bpc if base is None else base
        print(f"| {q or 'fp32'} | {bpc:.4f} | {bpc - base:+.4f} |")
    m.module = original
    onnx_path = os.path.join(out, "speed.onnx")
    m.export(onnx_path, "onnx")
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = a.threads
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    c = m.module.cfg
    names = ["h", "c"] if c.cell == "lstm" else ["h"]
    state = {n: np.zeros((c.layers, 1, c.hidden), np.float32) for n in names}

    def onnx_loop():
        rng, token, st = np.random.default_rng(1), 0, dict(state)
        for _ in range(a.length):  # examples/onnx_sample.py's loop at --temp 0.8
            logp, *new = sess.run(None, {"tokens": np.array([[token]], np.int64), **st})
            st.update(zip(names, new))
            p = np.exp((logp[0, -1] - logp[0, -1].max()) / 0.8)
            token = int(rng.choice(len(p), p=p / p.sum()))

    page = os.path.join(out, "speed.html")
    m.export(page, "html")
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

    def page_run(n: int) -> float:  # wall time of a headless page that writes n characters, start-up included
        t0 = time.perf_counter()
        subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={out}/profile",
                        "--virtual-time-budget=600000", "--dump-dom",
                        f"file://{page}#temp=0.8&length={n}&seed=1&run=1"], capture_output=True, check=True)
        return time.perf_counter() - t0

    rates = {"onnx": 0.0, "charrnn": 0.0, "page": 0.0}
    for _ in range(3):  # alternated, best of three: a busy machine slows one run, not a method
        for name, fn in (("charrnn", lambda: m.sample("", temp=0.8, length=a.length, seed=1, precision="fp32")),
                         ("onnx", onnx_loop)):
            t0 = time.perf_counter()
            fn()
            rates[name] = max(rates[name], a.length / (time.perf_counter() - t0))
        if browser:  # two lengths: the browser's start-up cancels out (timers in the page read virtual time)
            rates["page"] = max(rates["page"], a.length / max(page_run(a.length + 100) - page_run(100), 1e-3))
    onnx_rate, ours = rates["onnx"], rates["charrnn"]
    print(f"\n| sampler ({a.length} tokens, temperature 0.8, best of 3) | tokens/s |\n|---|---:|\n"
          f"| charrnn sample (Model.sample, fp32) | {ours:,.0f} |\n"
          f"| examples/onnx_sample.py's loop (onnxruntime) | {onnx_rate:,.0f} |")
    if browser:
        print(f"| the web page in headless Chromium | {rates['page']:,.0f} |")


if __name__ == "__main__":
    main()
