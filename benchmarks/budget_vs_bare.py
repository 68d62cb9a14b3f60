"""The budget's choice against a bare 2x256 LSTM script, same corpus, same seconds, one invocation.

    nice python benchmarks/budget_vs_bare.py [--corpus ../shared/corpora/tinyshakespeare.txt] [--seconds 250]
        [--precision fp32] [--slice-chars N] [--sides charrnn,bare,fixed]

charrnn: `charrnn train CORPUS --val-frac 0.1 --test-frac 0 --max-time SECONDS --precision P` with
nothing else given, so the budget chooses the model (a fresh probe cache: its seconds are not
part of --max-time and are reported). fixed: the same with --no-budget (the fixed 2x512 defaults).
bare: what a short plain-PyTorch script does: nn.Embedding(V, 64) -> nn.LSTM(64, 256, 2) ->
nn.Linear, PyTorch's default initialisation, fp32, Adam 3e-3 (constant), gradient clipping at 5,
batch 32 x 64 over contiguous streams with the hidden state carried (detached) from window to
window, for the same wall-clock seconds. Every side is scored by the same stateful pass over the
validation text (nanoGPT's split: first 90% train, last 10% val). The sides run one after the
other; the load average before each is printed, since a shared machine slows them unequally.

--parallel --threads 1 runs the sides at the same time instead, one thread each: on a machine
shared with other jobs both then meet the same contention, and a one-thread process is not stalled
by a descheduled partner thread (two-thread steps there ran up to 18x slower than one-thread ones).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from charrnn.data.corpus import load_corpus, read_pystdlib  # noqa: E402
from charrnn.evaluation.evaluate import evaluate_split  # noqa: E402
from charrnn.training.probe import cpu_model  # noqa: E402

DEFAULT_CORPUS = os.path.join(ROOT, "..", "shared", "corpora", "tinyshakespeare.txt")


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def run_charrnn(corpus: str, seconds: float, precision: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as ck:
        t0 = time.time()
        p = subprocess.run([sys.executable, "-m", "charrnn", "train", corpus, "--val-frac", "0.1", "--test-frac", "0",
                            "--max-time", str(seconds), "--precision", precision, "--checkpoint-dir", ck,
                            "--name", "bench", *extra], check=True, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        wall = time.time() - t0
        out = subprocess.run([sys.executable, "-m", "charrnn", "eval", os.path.join(ck, "bench"), "--json"],
                             check=True, capture_output=True, text=True, cwd=ROOT).stdout
        m = json.loads(out)
        with open(os.path.join(ck, "bench", "config.json")) as f:
            cfg = json.load(f)
        with open(os.path.join(ck, "bench", "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
    train = [r for r in rows if r["split"] == "train"]
    choice = cfg.get("budget_choice") or {}
    shape = ("layers", "hidden", "batch_size", "seq_len")
    chosen = [c for c in choice.get("candidates", []) if all(c[k] == cfg[k] for k in shape)]
    m.update(steps=rows[-1]["step"], wall=wall, line=next((x for x in p.stderr.splitlines() if x.startswith("budget:")), ""),
             tok_s=float(np.median([r["tok_s"] for r in train])) if train else float("nan"),
             shape=f"{cfg['layers']}x{cfg['hidden']}, {cfg['batch_size']} x {cfg['seq_len']}",
             probe_s=choice.get("probe_s"), predicted=chosen[0]["steps"] if chosen else None)
    return m


class BareLM(nn.Module):
    def __init__(self, vocab: int, hidden: int = 256, layers: int = 2, emb: int = 64):
        super().__init__()
        self.embed, self.rnn, self.out = nn.Embedding(vocab, emb), nn.LSTM(emb, hidden, layers, batch_first=True), \
            nn.Linear(hidden, vocab)

    def forward(self, x, state=None):
        h, state = self.rnn(self.embed(x), state)
        return self.out(h), state

    def token_nll(self, x, y, state=None):  # what charrnn's evaluation pass calls
        logits, state = self(x, state)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100,
                              reduction="none")
        return nll.view(y.shape), state


def run_bare(corpus: str, seconds: float, B: int = 32, T: int = 64) -> dict:
    torch.manual_seed(0)
    c = load_corpus(corpus, "char", val_frac=0.1, test_frac=0.0)
    model = BareLM(c.tokenizer.vocab_size)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    ids = torch.from_numpy(c.train.ids.astype(np.int64))
    n = (len(ids) - 1) // B
    xs, ys = ids[:n * B].view(B, n), ids[1:n * B + 1].view(B, n)
    steps, state, pos, t0 = 0, None, 0, time.time()
    while time.time() - t0 < seconds:
        if pos + T > n:
            pos, state = 0, None
        x, y = xs[:, pos:pos + T], ys[:, pos:pos + T]
        logits, state = model(x, state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        state = tuple(s.detach() for s in state)
        steps, pos = steps + 1, pos + T
    elapsed = time.time() - t0
    m = evaluate_split(model, c.tokenizer, c.val.ids, c.val.n_chars, c.val.n_bytes, torch.device("cpu"), "fp32")
    m.update(steps=steps, tok_s=steps * B * T / elapsed, wall=elapsed, shape=f"2x256, {B} x {T}", line="",
             probe_s=None, predicted=None)
    return m


def run_parallel(a, corpus: str, tmp: str) -> list:
    """Every side in its own process, all started together; their rows in the order given."""
    procs = []
    for side in a.sides.split(","):
        out = os.path.join(tmp, f"{side}.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--corpus", corpus, "--seconds", str(a.seconds),
               "--precision", a.precision, "--sides", side, "--threads", str(a.threads), "--json-out", out]
        procs.append((out, subprocess.Popen(cmd)))
    rows = []
    for out, p in procs:
        if p.wait() != 0:
            sys.exit(f"a side failed: {p.args}")
        with open(out) as f:
            rows += [tuple(r) for r in json.load(f)]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=DEFAULT_CORPUS, help="a text file, or 'pystdlib'")
    ap.add_argument("--seconds", type=float, default=250.0)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--slice-chars", type=int, default=0, help="use only the first N characters of the corpus")
    ap.add_argument("--sides", default="charrnn,bare")
    ap.add_argument("--parallel", action="store_true", help="run the sides at the same time")
    ap.add_argument("--threads", type=int, default=0, help="torch threads of each side (0: torch's default)")
    ap.add_argument("--json-out", help=argparse.SUPPRESS)  # a side run by --parallel writes its row here
    a = ap.parse_args()
    if a.threads:
        os.environ["OMP_NUM_THREADS"] = str(a.threads)  # for the charrnn subprocesses
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.abspath(a.corpus) if a.corpus != "pystdlib" else "pystdlib"
        if a.slice_chars or corpus == "pystdlib":
            text = read_pystdlib() if corpus == "pystdlib" else open(corpus, encoding="utf-8").read()
            corpus = os.path.join(tmp, f"{os.path.basename(a.corpus).split('.')[0]}_slice.txt")
            with open(corpus, "w", encoding="utf-8") as f:
                f.write(text[:a.slice_chars] if a.slice_chars else text)
        rows = run_parallel(a, corpus, tmp) if a.parallel else []
        for side in a.sides.split(",") if not a.parallel else ():
            before = load()
            print(f"{side}: load average {before} ...", file=sys.stderr, flush=True)
            if side == "bare":
                m = run_bare(corpus, a.seconds)
            else:
                m = run_charrnn(corpus, a.seconds, a.precision, ["--no-budget"] if side == "fixed" else [])
            m["load"] = before
            rows.append((side, m))
            print(json.dumps({"side": side, **{k: v for k, v in m.items() if k != "line"}}), file=sys.stderr, flush=True)
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(rows, f)
        return
    names = {"charrnn": f"charrnn defaults, --precision {a.precision} (budget's choice)",
             "fixed": f"charrnn --no-budget (fixed defaults), --precision {a.precision}",
             "bare": "bare nn.LSTM script 2x256, fp32, Adam 3e-3, clip 5, state carried"}
    print(f"\n{time.strftime('%Y-%m-%d')}, {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{os.path.basename(a.corpus)}{f' (first {a.slice_chars:,} chars)' if a.slice_chars else ''}, "
          f"{a.seconds:g} s each, nice, {'at the same time' if a.parallel else 'one after the other'}\n")
    print("| side | model, batch x window | steps | tokens/s | val loss (nats/char) | val bits/char | load avg before |")
    print("|---|---|---:|---:|---:|---:|---|")
    for side, m in rows:
        print(f"| {names[side]} | {m['shape']} | {m['steps']} | {m['tok_s']:,.0f} | {m['loss']:.4f} | {m['bpc']:.4f} | "
              f"{m['load']} |")
    ref = dict(rows).get("bare")
    for side, m in rows:
        if m.get("line"):
            print(f"\n{side}: {m['line']}" + (f" (probe {m['probe_s']} s, before the budget)" if m["probe_s"] else ""))
        if ref is not None and side != "bare":
            print(f"margin {side} vs bare: {ref['loss'] - m['loss']:+.4f} nats/char (positive: charrnn better)")


if __name__ == "__main__":
    main()
