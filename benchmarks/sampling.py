"""Sampling speed: charrnn against the plain one-token step, in the same process, at 1 and 2 threads.

    python benchmarks/sampling.py [--length 1000] [--streams 64] [--batch-length 200] [--rounds 5]

The reference is the plain 10-line step a user would write: per layer one ``torch.addmm`` of [x, h]
with the layer's stacked weights (prepared once), the gates activated in place, then the output
layer, softmax at the temperature and ``torch.multinomial``. charrnn is timed through its front doors
(no per-step work is skipped): ``generate()`` for one stream (decodes and yields text every token),
the same with a stop rule that never fires (``--stop``: the per-token tracker path), and
``Job.samples()`` for ``--streams`` streams (``charrnn sample --num-samples N``). Same model (the
default 2x512 LSTM, emb 64, random weights: speed does not depend on them), fp32, same threads.

A shared machine slows runs unevenly, so the two sides alternate in short rounds and the median of
the per-round ratios is reported (with the median tokens/s of each side). Prints a markdown table with
the CPU model, the instruction set torch uses (ATEN_CPU_CAPABILITY) and oneDNN's limit if set, and
the kernels charrnn chose.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from charrnn.data.tokenizers import CharTokenizer
from charrnn.generation.cudagraph import make_stepper
from charrnn.generation.sample import Job, generate, sample_options
from charrnn.model.network import ModelConfig, RNNLM
from charrnn.system.device import cpu_model


@torch.no_grad()
def plain(model, length: int, streams: int, temperature: float = 0.8, seed: int = 0) -> int:
    """The plain step (weights stacked once, outside the timing as charrnn's are). Returns tokens made."""
    r, H = model.rnn, model.cfg.hidden
    W = [torch.cat([getattr(r, f"weight_ih_l{i}"), getattr(r, f"weight_hh_l{i}")], 1).t().contiguous()
         for i in range(r.num_layers)]
    b = [getattr(r, f"bias_ih_l{i}") + getattr(r, f"bias_hh_l{i}") for i in range(r.num_layers)]
    ow, ob = model.head.linear_parts()
    ow = ow.t().contiguous()
    gen = torch.Generator().manual_seed(seed)
    h = [torch.zeros(streams, H) for _ in W]
    c = [torch.zeros(streams, H) for _ in W]
    tok = torch.zeros(streams, dtype=torch.long)
    for _ in range(length):
        x = model.embed.weight.index_select(0, tok)
        for i in range(len(W)):
            i_, f, g, o = torch.addmm(b[i], torch.cat([x, h[i]], 1), W[i]).chunk(4, 1)
            i_.sigmoid_(), f.sigmoid_(), g.tanh_(), o.sigmoid_()
            c[i] = f * c[i] + i_ * g
            h[i] = x = o * torch.tanh(c[i])
        tok = torch.multinomial(torch.softmax(torch.addmm(ob, x, ow) / temperature, -1), 1, generator=gen).view(-1)
    return length * streams


def ours_stream(model, tok, length: int, **rules) -> int:
    for _ in generate(model, tok, length, 0.8, seed=0, precision="fp32", **rules):
        pass
    return length


def ours_batch(model, tok, length: int, streams: int) -> int:
    job = Job(model, tok, "", sample_options({"length": length, "temp": 0.8, "seed": 1, "num_samples": streams,
                                              "precision": "fp32"}))
    return sum(s.tokens for s in job.samples())


def rate(fn) -> float:
    t = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t)


def compare(ours, ref, rounds: int) -> tuple[float, float, float]:
    """Median tokens/s of each, and the median of per-round ratios (the order alternates)."""
    a, b, ratios = [], [], []
    for k in range(rounds):
        if k % 2:
            y, x = rate(ref), rate(ours)
        else:
            x, y = rate(ours), rate(ref)
        a.append(x), b.append(y), ratios.append(x / y)
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=1000, help="tokens per round, one stream")
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--batch-length", type=int, default=200, help="tokens per stream per round, --streams streams")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    a = ap.parse_args()
    tok = CharTokenizer.fit("".join(chr(c) for c in range(32, 127)) + "\n")
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(tok.vocab_size, "lstm", 2, 512, 64, 0.0)).eval()
    isa = torch.backends.cpu.get_cpu_capability()
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA")
    print(f"\n{time.strftime('%Y-%m-%d')}, {cpu_model()}, torch {torch.__version__}, ATen {isa}"
          f"{', oneDNN max ' + onednn if onednn else ''}; LSTM 2x512 emb 64, vocab {tok.vocab_size}, fp32, "
          f"median of {a.rounds} alternating rounds\n")
    print("| threads | sampler | charrnn tokens/s | plain step tokens/s | charrnn / plain (same rounds) | kernels |")
    print("|---:|---|---:|---:|---:|---|")
    for threads in (int(t) for t in a.threads.split(",")):
        torch.set_num_threads(threads)
        ours_stream(model, tok, 50), plain(model, 50, 1), ours_batch(model, tok, 20, a.streams)  # warm-up, choices
        stepper = make_stepper(model, "fp32", "cpu")
        rows = [("1 stream, generate()", lambda: ours_stream(model, tok, a.length), lambda: plain(model, a.length, 1), 1),
                ("1 stream, generate(stop=...)", lambda: ours_stream(model, tok, a.length, stop=("\x00",)),
                 lambda: plain(model, a.length, 1), 1),
                (f"{a.streams} streams, samples()", lambda: ours_batch(model, tok, a.batch_length, a.streams),
                 lambda: plain(model, a.batch_length, a.streams), a.streams)]
        for name, ours, ref, n in rows:
            x, y, ratio = compare(ours, ref, a.rounds)
            used = ", ".join(p.kernel(n) for p in stepper.products())
            print(f"| {threads} | {name} | {x:,.0f} | {y:,.0f} | {ratio:.2f}x | {used} |", flush=True)


if __name__ == "__main__":
    main()
