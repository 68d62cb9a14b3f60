"""Batched sampling speed: one stream vs --num-samples N parallel streams, beside the old sampler.

    nice python benchmarks/sampling_batch.py [--streams 64] [--length 500] [--repeats 3]

Builds the default 2x512 LSTM (emb 64) over a ~100-character vocabulary with random weights (speed
does not depend on them) and measures generated characters per second, in the same run:

* the sampler of commit c76d0d3 (its Stepper and generate() loop copied below, the LSTM path that
  this model takes: one stream, two addmm per layer, softmax and multinomial per token),
* today's sampler with one stream (``charrnn sample``), in fp32 and with ``--precision bf16``,
* today's sampler with N streams in one batch (``charrnn sample --num-samples N``; total chars/s),
  in fp32 and with ``--precision bf16``.

The old sampler is the same-process reference: run the benchmark from two checkouts (before and
after a change) and compare their ratios to it, not their absolute figures.

Rounds are interleaved (old, new, batch, old, ...) so a busy machine slows all columns alike; the
median round is reported. Prints a markdown table with the CPU model (lscpu) and thread count, and
for how many of 300 characters today's fp32 stream writes the same text as c76d0d3's for one seed
(since the sampler draws by inverse CDF (generation/draw.py) instead of torch.multinomial, a seed
gives another text than c76d0d3's: expect a few characters). For the plain-step reference at 1 and 2
threads see benchmarks/sampling.py.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

import torch

from charrnn.model.network import ModelConfig, RNNLM
from charrnn.generation.sample import Job, generate, sample_options
from charrnn.data.tokenizers import CharTokenizer


# ----------------------------------------------------------------------------- c76d0d3's sampler, verbatim

class OldStepper:
    def __init__(self, model: RNNLM):
        self.model, self.cell = model, model.cfg.cell
        rnn = model.rnn
        self.layers = [(getattr(rnn, f"weight_ih_l{i}"), getattr(rnn, f"weight_hh_l{i}"),
                        getattr(rnn, f"bias_ih_l{i}"), getattr(rnn, f"bias_hh_l{i}")) for i in range(rnn.num_layers)]

    def split_state(self, state):
        if self.cell == "lstm":
            return [list(state[0].unbind(0)), list(state[1].unbind(0))]
        return [list(state.unbind(0))]

    def __call__(self, token: int, state):
        x = self.model.embed.weight[token].view(1, -1)
        hs = state[0]
        for i, (w_ih, w_hh, b_ih, b_hh) in enumerate(self.layers):
            gi = torch.addmm(b_ih, x, w_ih.t())
            gh = torch.addmm(b_hh, hs[i], w_hh.t())
            ig, fg, gg, og = (gi + gh).chunk(4, 1)
            c = torch.sigmoid(fg) * state[1][i] + torch.sigmoid(ig) * torch.tanh(gg)
            h = torch.sigmoid(og) * torch.tanh(c)
            state[1][i] = c
            hs[i] = x = h
        return self.model.head.log_probs(x)[0]


@torch.no_grad()
def old_generate(model, tokenizer, length, temperature=1.0, seed=None):
    gen = torch.Generator()
    gen.manual_seed(seed)
    ids = tokenizer.encode("\n")[:1]
    logits, state = model(torch.as_tensor(ids, dtype=torch.long).view(1, -1))
    logits = logits[0, -1].float()
    step = OldStepper(model)
    state = step.split_state(state)
    decoder = tokenizer.stream_decoder()
    for _ in range(length):
        scaled = (logits - logits.max()) / temperature
        probs = torch.softmax(scaled, dim=-1)
        nxt = int(torch.multinomial(probs, 1, generator=gen))
        text = decoder.feed(nxt)
        if text:
            yield text
        logits = step(nxt, state).float()


# ----------------------------------------------------------------------------- the measurements

def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown CPU"


def chars_per_s(fn) -> float:
    t = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--length", type=int, default=500, help="tokens per stream")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    tok = CharTokenizer.fit("".join(chr(c) for c in range(32, 127)) + "\n\t\u00e9\u00fc")
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(tok.vocab_size, "lstm", 2, 512, 64, 0.0)).eval()

    def old():
        return len("".join(old_generate(model, tok, a.length, 0.8, seed=1)))

    def new(precision="fp32"):
        return len("".join(generate(model, tok, a.length, 0.8, seed=1, precision=precision)))

    def batch(precision="fp32"):
        job = Job(model, tok, "", sample_options({"length": a.length, "temp": 0.8, "seed": 1,
                                                  "num_samples": a.streams, "precision": precision}))
        return sum(len(s.text) for s in job.samples())

    ref, now = "".join(old_generate(model, tok, 300, 0.8, seed=1)), "".join(generate(model, tok, 300, 0.8, seed=1))
    same = next((i for i, (x, y) in enumerate(zip(ref, now)) if x != y), min(len(ref), len(now)))
    runs = {"old": [], "new": [], "new_bf16": [], "batch": [], "bf16": []}
    for _ in range(a.repeats):
        for name, fn in (("old", old), ("new", new), ("new_bf16", lambda: new("bf16")), ("batch", batch),
                         ("bf16", lambda: batch("bf16"))):
            runs[name].append(chars_per_s(fn))
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"\n{time.strftime('%Y-%m-%d')}, {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"LSTM 2x512 emb 64, vocab {tok.vocab_size}, {a.length} tokens per stream, median of {a.repeats} "
          "interleaved rounds\n")
    print("| sampler | chars/s | vs c76d0d3 (same run) |\n|---|---:|---:|")
    print(f"| c76d0d3 generate(), 1 stream (reference) | {med['old']:,.0f} | 1.00x |")
    print(f"| generate() today, 1 stream | {med['new']:,.0f} | {med['new'] / med['old']:.2f}x |")
    print(f"| generate() today, 1 stream, --precision bf16 | {med['new_bf16']:,.0f} | "
          f"{med['new_bf16'] / med['old']:.2f}x |")
    print(f"| --num-samples {a.streams}, one batch (total) | {med['batch']:,.0f} | {med['batch'] / med['old']:.1f}x |")
    print(f"| --num-samples {a.streams} --precision bf16 (total) | {med['bf16']:,.0f} | {med['bf16'] / med['old']:.1f}x |")
    print(f"\n{a.streams} streams vs 1 stream today: fp32 {med['batch'] / med['new']:.1f}x, "
          f"bf16 {med['bf16'] / med['new_bf16']:.1f}x (vs a bf16 stream), {med['bf16'] / med['new']:.1f}x (vs an fp32 "
          f"stream); seed 1 gives the same text as c76d0d3 for {same} of 300 characters; "
          f"rounds: " + "; ".join(f"{k} " + ", ".join(f"{v:,.0f}" for v in vs) for k, vs in runs.items()))


if __name__ == "__main__":
    main()
