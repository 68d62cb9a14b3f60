"""Sampling speed: charrnn's generate() vs the naive loop that calls the fused nn.LSTM per token.

    python benchmarks/sampling.py [--length 2000] [--hidden 512] [--layers 2]

Both generate from the same (untrained; speed does not depend on the weights) default-shaped model
on the CPU, one token per step. Prints tokens/s and the ratio.
"""

from __future__ import annotations

import argparse
import time

import torch

from charrnn.model.network import ModelConfig, RNNLM
from charrnn.generation.sample import generate
from charrnn.data.tokenizers import CharTokenizer

from quality_per_time import cpu_model


@torch.no_grad()
def naive(model, length: int, temperature: float = 0.8) -> None:
    x = torch.zeros(1, 1, dtype=torch.long)
    state = None
    for _ in range(length):
        logits, state = model(x, state)
        x = torch.multinomial(torch.softmax(logits[0, -1] / temperature, -1), 1).view(1, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=2000)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    a = ap.parse_args()
    tok = CharTokenizer.fit("".join(chr(c) for c in range(32, 97)) + "\n")
    model = RNNLM(ModelConfig(tok.vocab_size, "lstm", a.layers, a.hidden, 64, 0.0)).eval()
    t = time.perf_counter()
    for _ in generate(model, tok, a.length, 0.8, seed=0):
        pass
    ours = a.length / (time.perf_counter() - t)
    t = time.perf_counter()
    naive(model, a.length)
    ref = a.length / (time.perf_counter() - t)
    print(f"\n{time.strftime('%Y-%m-%d')}, {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"LSTM {a.layers}x{a.hidden}, {a.length} tokens\n")
    print("| sampler | tokens/s |\n|---|---:|")
    print(f"| charrnn generate() (per-step matrix-vector products) | {ours:,.0f} |")
    print(f"| naive loop calling nn.LSTM per token | {ref:,.0f} |")
    print(f"\nratio: {ours / ref:.1f}x")


if __name__ == "__main__":
    main()
