"""Quality per minute: charrnn's defaults vs a bare nn.LSTM of the same shape, same seconds.

    python benchmarks/quality_per_time.py [--corpus ../shared/corpora/tinyshakespeare.txt] [--seconds 250]

Both see the same text with nanoGPT's split (first 90% train, last 10% val) and both are scored
by the same full stateful pass over the validation text. The reference is what a plain PyTorch
script does: random windows of the train text, fp32, Adam at a constant 2e-3, no state carry.
Prints a markdown table (CPU model and torch version included) for docs/BENCHMARKS.md.
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

from charrnn.data.corpus import load_corpus
from charrnn.evaluation.evaluate import evaluate_split
from charrnn.model.network import ModelConfig, RNNLM
from charrnn.training.probe import cpu_model  # noqa: F401  (also used by sampling.py)
from charrnn.settings import TrainConfig

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CORPUS = os.path.join(HERE, "..", "..", "shared", "corpora", "tinyshakespeare.txt")


def run_charrnn(corpus: str, seconds: float, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as ck:
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "charrnn", "train", corpus, "--val-frac", "0.1", "--test-frac", "0",
                        "--max-time", str(seconds), "--checkpoint-dir", ck, "--name", "bench", *extra],
                       check=True, stderr=subprocess.DEVNULL)
        wall = time.time() - t0
        out = subprocess.run([sys.executable, "-m", "charrnn", "eval", os.path.join(ck, "bench"), "--json"],
                             check=True, capture_output=True, text=True).stdout
        m = json.loads(out)
        with open(os.path.join(ck, "bench", "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        train_rows = [r for r in rows if r["split"] == "train"]
        m["steps"] = rows[-1]["step"]
        m["tok_s"] = float(np.median([r["tok_s"] for r in train_rows])) if train_rows else float("nan")
        m["wall"] = wall
        return m


def run_reference(corpus: str, seconds: float, cfg: TrainConfig) -> dict:
    """A bare nn.LSTM language model, trained the way a short plain-PyTorch script would."""
    torch.manual_seed(0)
    c = load_corpus(corpus, "char", val_frac=0.1, test_frac=0.0)
    model = RNNLM(ModelConfig(c.tokenizer.vocab_size, "lstm", cfg.layers, cfg.hidden, cfg.emb, 0.0))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    data = torch.from_numpy(c.train.ids.astype(np.int64))
    B, T, steps, tokens = cfg.batch_size, cfg.seq_len, 0, 0
    t0 = time.time()
    while time.time() - t0 < seconds:
        ix = torch.randint(len(data) - T - 1, (B,))
        x = torch.stack([data[i:i + T] for i in ix])
        y = torch.stack([data[i + 1:i + T + 1] for i in ix])
        logits, _ = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps, tokens = steps + 1, tokens + x.numel()
    elapsed = time.time() - t0
    m = evaluate_split(model, c.tokenizer, c.val.ids, c.val.n_chars, c.val.n_bytes, torch.device("cpu"), "fp32")
    m.update(steps=steps, tok_s=tokens / elapsed, wall=elapsed)
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--seconds", type=float, default=250.0)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("extra", nargs="*", help="extra charrnn train flags (after --)")
    a = ap.parse_args()
    if not os.path.exists(a.corpus):
        sys.exit(f"corpus {a.corpus} not found (see ../shared/corpora/README.md)")
    cfg = TrainConfig()
    rows = [("charrnn defaults" + (" " + " ".join(a.extra) if a.extra else ""), run_charrnn(a.corpus, a.seconds, a.extra))]
    if not a.skip_reference:
        rows.append((f"bare nn.LSTM {cfg.layers}x{cfg.hidden}, fp32, Adam 2e-3, random windows",
                     run_reference(a.corpus, a.seconds, cfg)))
    print(f"\n{time.strftime('%Y-%m-%d')}, {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{os.path.basename(a.corpus)}, {a.seconds:g} s budget\n")
    print("| model | steps | tokens/s | val loss (nats/char) | val bits/char |")
    print("|---|---:|---:|---:|---:|")
    for name, m in rows:
        print(f"| {name} | {m['steps']} | {m['tok_s']:,.0f} | {m['loss']:.4f} | {m['bpc']:.4f} |")
    if len(rows) == 2:
        a_, b_ = rows[0][1], rows[1][1]
        print(f"\nthroughput ratio charrnn/reference: {a_['tok_s'] / b_['tok_s']:.2f}x; "
              f"val loss margin: {b_['loss'] - a_['loss']:+.4f} nats/char in charrnn's favour")


if __name__ == "__main__":
    main()
