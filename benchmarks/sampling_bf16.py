"""Does sampling with bf16 products draw from the same distribution as fp32? (issues #9, #14)

    python benchmarks/sampling_bf16.py CHECKPOINT TEXT [--streams 64] [--steps 400] [--samples 64]

1. Next-token distributions: ``--streams`` windows of TEXT (held-out text the model did not train
   on), each read from a fresh state by an fp32 and a bf16 ``Stepper`` side by side (teacher forcing:
   each keeps its own state, as sampling does); at every position the KL divergence KL(fp32 || bf16),
   the total-variation distance and whether the most likely token is the same.
   As a yardstick, the same numbers between the fp32 model and itself with its weights rounded to
   bf16 and back (what storing the checkpoint in bf16 would do), and between fp32 and a model
   whose weights carry noise of 1e-3 of their size.
2. Generated text: ``--samples`` samples of ``--length`` tokens at temperature 1 with each
   precision, all scored by the fp32 model (bits per token, a fused forward pass); the difference
   of the means beside its standard error (the sampling noise of two fp32 sets of other seeds).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

from charrnn.api import load
from charrnn.training.probe import cpu_model
from charrnn.generation.sample import Job, sample_options
from charrnn.generation.stepper import Stepper


@torch.no_grad()
def compare(model, windows: torch.Tensor, other) -> dict:
    """KL(fp32 || other), total variation, argmax agreement over every position of every window."""
    ref = Stepper(model, "fp32")
    B = windows.shape[0]
    zeros = tuple(tuple(torch.zeros(B, model.cfg.hidden) for _ in range(model.cfg.layers))
                  for _ in range(2 if model.cfg.cell == "lstm" else 1))
    a, b = zeros, zeros
    kl, tv, agree = [], [], []
    for t in range(windows.shape[1]):
        la, a = ref(windows[:, t], a)
        lb, b = other(windows[:, t], b)
        pa, pb = la.double().exp(), lb.double().exp()
        kl.append((pa * (la.double() - lb.double())).sum(-1))
        tv.append(0.5 * (pa - pb).abs().sum(-1))
        agree.append((la.argmax(-1) == lb.argmax(-1)).double())
    kl, tv, agree = torch.stack(kl), torch.stack(tv), torch.stack(agree)
    return {"kl_mean": kl.mean().item(), "kl_p99": kl.flatten().quantile(0.99).item(), "kl_max": kl.max().item(),
            "tv_mean": tv.mean().item(), "tv_p99": tv.flatten().quantile(0.99).item(), "tv_max": tv.max().item(),
            "argmax_same": agree.mean().item(), "positions": kl.numel()}


@torch.no_grad()
def bits_per_token(model, tok, texts: list[str]) -> list[float]:
    out = []
    for text in texts:
        ids = torch.as_tensor(tok.encode(text), dtype=torch.long).view(1, -1)
        logp, _ = model(ids[:, :-1])
        out.append(-logp[0].double().gather(-1, ids[0, 1:, None]).mean().item() / math.log(2))
    return out


def samples(model, tok, precision: str, n: int, length: int, seed: int) -> list[str]:
    opts = sample_options({"length": length, "temp": 1.0, "seed": seed, "num_samples": n, "precision": precision})
    return [s.text for s in Job(model, tok, "\n", opts).samples()]


def mean_se(xs):
    return statistics.mean(xs), statistics.stdev(xs) / math.sqrt(len(xs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("text", help="held-out text (UTF-8) to take the windows from")
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--length", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = load(a.checkpoint, device="cpu")
    model, tok = m.module.eval(), m.tokenizer
    text = open(a.text, encoding="utf-8").read()
    ids = tok.encode(text[-len(text) // 10:], skip_unknown=True)  # the last 10%: the validation split
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(ids) - a.steps, a.streams)
    windows = torch.as_tensor(np.stack([ids[s:s + a.steps] for s in starts]), dtype=torch.long)

    rounded = load(a.checkpoint, device="cpu").module.eval()
    noisy = load(a.checkpoint, device="cpu").module.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.bfloat16().float())
        for p in noisy.parameters():
            p.add_(torch.randn_like(p) * p.abs().mean() * 1e-3)
    rows = {"bf16 products (--precision bf16)": compare(model, windows, Stepper(model, "bf16")),
            "fp32, weights stored in bf16": compare(model, windows, Stepper(rounded, "fp32")),
            "fp32, weights + 1e-3 relative noise": compare(model, windows, Stepper(noisy, "fp32"))}
    print(f"\n{time.strftime('%Y-%m-%d')}, {cpu_model()}, torch {torch.__version__}, {a.checkpoint} "
          f"({model.cfg.cell} {model.cfg.layers}x{model.cfg.hidden}, vocab {model.cfg.vocab_size}); "
          f"{a.streams} windows x {a.steps} tokens of the last 10% of {a.text}\n")
    print("| against fp32 | KL mean (nats) | KL p99 | KL max | TV mean | TV p99 | TV max | same argmax |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['kl_mean']:.2e} | {r['kl_p99']:.2e} | {r['kl_max']:.2e} | {r['tv_mean']:.2e} | "
              f"{r['tv_p99']:.2e} | {r['tv_max']:.2e} | {100 * r['argmax_same']:.2f}% |")

    sets = {"fp32, seed 1": samples(model, tok, "fp32", a.samples, a.length, 1),
            "fp32, seed 2": samples(model, tok, "fp32", a.samples, a.length, 2),
            "bf16, seed 1": samples(model, tok, "bf16", a.samples, a.length, 1),
            "bf16, seed 3": samples(model, tok, "bf16", a.samples, a.length, 3)}
    scored = {k: bits_per_token(model, tok, v) for k, v in sets.items()}
    print(f"\n{a.samples} samples x {a.length} tokens at temperature 1, scored by the fp32 model "
          "(bits per token, mean ± standard error):\n")
    print("| samples | bits/token | same text as fp32 seed 1 |\n|---|---:|---:|")
    for k, v in scored.items():
        mu, se = mean_se(v)
        same = sum(x == y for x, y in zip(sets[k], sets["fp32, seed 1"]))
        print(f"| {k} | {mu:.4f} ± {se:.4f} | {same} of {a.samples} |")


if __name__ == "__main__":
    main()
