"""What --attention M costs: training tokens/s of an LSTM with and without the attention head, one process.

    python benchmarks/attention.py [--threads 2] [--spans 0,32,128,512] [--rounds 5] [--steps 3]
        [--layers 2] [--hidden 256] [--batch 32] [--seq-len 128] [--sample]

Every model (the same LSTM, emb 64, vocabulary 65, dropout 0.1, charrnn's RNNLM and AdamW of
step.make_optimizer) trains on the same random windows with its state carried and detached, as the
trainer does: forward and loss, backward, clip_grad_norm_(1.0), the optimizer step. The spans run
in turn, the order reversed every other round (ABC.., ..CBA), ``--steps`` timed steps each after one
warm-up step; the figure per span is its best round's tokens/s (wall clock), and the ratio to span 0
(no attention) is the median of the per-round ratios, so a busy machine slows both sides of a ratio
alike. The load average (1 min) is printed before and after: on a shared machine, say so beside
the figures. ``--sample`` adds one-token sampling steps (the Runner, as ``charrnn sample`` steps, batch 1) per span.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from charrnn.generation.stepper import Runner, Stepper  # noqa: E402
from charrnn.model import state as states  # noqa: E402
from charrnn.model.network import ModelConfig, RNNLM  # noqa: E402
from charrnn.system.device import cpu_model  # noqa: E402
from charrnn.training.step import make_optimizer  # noqa: E402

VOCAB = 65


class Side:
    def __init__(self, span: int, a):
        torch.manual_seed(0)
        self.model = RNNLM(ModelConfig(vocab_size=VOCAB, layers=a.layers, hidden=a.hidden, emb=64, dropout=0.1,
                                       attention=span)).train()
        self.opt = make_optimizer(self.model, 3e-3, 0.01, torch.device("cpu"))
        self.params = list(self.model.parameters())
        g = torch.Generator().manual_seed(1)
        self.data = [torch.randint(VOCAB, (a.batch, a.seq_len + 1), generator=g) for _ in range(4)]
        self.state, self.k = None, 0

    def step(self) -> None:
        w = self.data[self.k % len(self.data)]
        self.k += 1
        loss, state = self.model.loss(w[:, :-1], w[:, 1:], self.state)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.state = states.detach(state)


def sample_rate(span: int, a, n: int = 300) -> float:
    torch.manual_seed(0)
    m = RNNLM(ModelConfig(vocab_size=VOCAB, layers=a.layers, hidden=a.hidden, emb=64, attention=span)).eval()
    step = Stepper(m)
    with torch.no_grad():
        run = Runner(step, step.from_module(m(torch.zeros(1, 1, dtype=torch.long))[1]))
    tok = torch.zeros(1, dtype=torch.long)
    for _ in range(20):
        run(tok)
    t0 = time.perf_counter()
    for i in range(n):
        run(tok.fill_(i % VOCAB))
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--spans", default="0,32,128,512")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--sample", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    spans = [int(s) for s in a.spans.split(",")]
    assert spans[0] == 0, "the first span is the reference: 0 (no attention)"
    load0 = os.getloadavg()[0]
    print(f"# {cpu_model()}, {a.threads} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"# lstm {a.layers}x{a.hidden}, emb 64, vocab {VOCAB}, batch {a.batch} x {a.seq_len}; "
          f"load average (1 min) before: {load0:.2f}")
    sides = {s: Side(s, a) for s in spans}
    for side in sides.values():
        side.step()  # warm-up
    tok = a.batch * a.seq_len * a.steps
    rates = {s: [] for s in spans}
    for r in range(a.rounds):
        for s in (spans if r % 2 == 0 else spans[::-1]):
            t0 = time.perf_counter()
            for _ in range(a.steps):
                sides[s].step()
            rates[s].append(tok / (time.perf_counter() - t0))
    print(f"{'attention M':>12} {'params':>10} {'train tok/s':>12} {'x span 0':>9}" + (
        f" {'sample tok/s':>13} {'x span 0':>9}" if a.sample else ""))
    base_sample = sample_rate(0, a) if a.sample else None
    for s in spans:
        ratio = statistics.median(x / b for x, b in zip(rates[s], rates[0]))
        line = f"{s:>12} {sides[s].model.num_parameters():>10,} {max(rates[s]):>12,.0f} {ratio:>9.2f}"
        if a.sample:
            sr = base_sample if s == 0 else sample_rate(s, a)
            line += f" {sr:>13,.0f} {sr / base_sample:>9.2f}"
        print(line)
    print(f"# load average (1 min) after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
