"""Bits per character across tokenizers: char, byte and bpe models trained for the same seconds.

    python benchmarks/tokenizers.py [--corpus ../shared/corpora/tinyshakespeare.txt] [--seconds 250]

Every run uses nanoGPT's split (first 90% train, last 10% val). The split is made on characters
before tokenizing, so all models are scored on the very same validation text, and bits per
character (total -log2 likelihood / characters) ranks them on one number whatever the tokenizer.
Prints a markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality_per_time import DEFAULT_CORPUS, cpu_model  # noqa: E402

RUNS = [("char", []), ("byte", []), ("bpe", ["--vocab-size", "512"])]


def train(corpus: str, seconds: float, tok: str, extra: list[str], ck: str) -> None:
    with open(os.path.join(ck, f"{tok}.log"), "w") as log:
        subprocess.run([sys.executable, "-m", "charrnn", "train", corpus, "--val-frac", "0.1", "--test-frac", "0",
                        "--max-time", str(seconds), "--tokenizer", tok, *extra, "--checkpoint-dir", ck, "--name", tok],
                       check=True, stderr=log)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--seconds", type=float, default=250.0)
    ap.add_argument("--keep", metavar="DIR", help="keep the runs (and each training log, DIR/<tokenizer>.log) here")
    ap.add_argument("--reuse", action="store_true", help="with --keep: only tabulate runs already in DIR")
    a = ap.parse_args()
    if not os.path.exists(a.corpus):
        sys.exit(f"corpus {a.corpus} not found (see ../shared/corpora/README.md)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ck = a.keep or tmp
        os.makedirs(ck, exist_ok=True)
        for tok, extra in RUNS:
            if not (a.reuse and os.path.exists(os.path.join(ck, tok, "last.pt"))):
                train(a.corpus, a.seconds, tok, extra, ck)
            m = json.loads(subprocess.run([sys.executable, "-m", "charrnn", "eval", os.path.join(ck, tok), "--json"],
                                          check=True, capture_output=True, text=True).stdout)
            with open(os.path.join(ck, tok, "metrics.jsonl")) as f:
                log_rows = [json.loads(line) for line in f]
            train_rows = [r for r in log_rows if r["split"] == "train"]
            m["steps"] = log_rows[-1]["step"]
            m["tok_s"] = sorted(r["tok_s"] for r in train_rows)[len(train_rows) // 2] if train_rows else 0
            rows.append((tok + (" " + " ".join(extra) if extra else ""), m))
    print(f"\n{time.strftime('%Y-%m-%d')}, {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{os.path.basename(a.corpus)}, {a.seconds:g} s each, defaults otherwise\n")
    print("| tokenizer | val tokens | chars/token | steps | tokens/s | chars/s | loss/token | val bits/char |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in rows:
        cpt = m["chars"] / m["tokens"]
        print(f"| {name} | {m['tokens']:,} | {cpt:.2f} | {m['steps']} | {m['tok_s']:,.0f} | {m['tok_s'] * cpt:,.0f} "
              f"| {m['loss']:.4f} | {m['bpc']:.4f} |")


if __name__ == "__main__":
    main()
