"""The cells of model/cells (QRNN, SRU, IndRNN, JANET, peephole LSTM) raced against the fused nn.LSTM.

    python benchmarks/cells.py speed   [--threads 2] [--rounds 5] [--steps 3] [--precision fp32,bf16]
                                       [--compare both|hidden|parameters]
    python benchmarks/cells.py scan    [--threads 2]             # the scan's forms, forward+backward
    python benchmarks/cells.py sample  [--threads 2] [--tokens 300]
    python benchmarks/cells.py quality [--threads 2] [--seconds 250] [--equal-steps 1000] [--corpus PATH]

speed: training tokens/s of one charrnn training step (RNNLM, the trainer's AdamW, forward + loss +
backward + clipping + update, the state carried and detached) of each cell against the LSTM, at equal
hidden size (2x512, emb 64, vocab 65, batch 32 x 128: the defaults) and at equal parameter count (the
cell's hidden size chosen so its model has the LSTM's parameters, model/sizes.py). The cells run in
turn, the order rotated every round, ``--steps`` timed steps each after one untimed step; a cell's
figure is its best round, the ratio the median over rounds of (cell / LSTM in the same round).
scan: the blocked scan (scan.linear_scan, custom backward) against a step loop with autograd through
it and the log-space form, forward + backward at 32 x 128 x 512. sample: tokens/s of one stream
stepped by generation/stepper.py (the LSTM by the Runner, as charrnn sample does). quality: each cell
trained on tinyshakespeare with charrnn.train's defaults otherwise, for ``--seconds`` of wall time and
for ``--equal-steps`` steps; the best validation bits/char of each (one after another: run it on a quiet
machine). Every mode prints the date, CPU model, thread count and load average first.
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

from charrnn.model.cells import STACKS, scan as S  # noqa: E402
from charrnn.model.network import ModelConfig, RNNLM  # noqa: E402
from charrnn.model.sizes import n_parameters  # noqa: E402
from charrnn.system.device import autocast, cpu_model  # noqa: E402
from charrnn.training.step import make_optimizer  # noqa: E402

CELLS = ["lstm", *STACKS]
V, E, H, L, B, T = 65, 64, 512, 2, 32, 128
CORPUS = os.path.join(os.path.dirname(HERE), "..", "shared", "corpora", "tinyshakespeare.txt")


def header(threads: int) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; CPU: {cpu_model()}; {threads} threads; "
          f"torch {torch.__version__}; load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}", flush=True)


def equal_params_hidden(cell: str) -> int:
    """The hidden size at which a 2-layer ``cell`` model has (at most) the 2x512 LSTM's parameters."""
    want = n_parameters(V, "lstm", L, H, E)
    lo, hi = 8, 8 * H
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if n_parameters(V, cell, L, mid, E) <= want else (lo, mid - 1)
    return lo


class Trainer:
    """One cell's model, optimizer and data: ``step()`` is one training step."""

    def __init__(self, cell: str, hidden: int, precision: str):
        torch.manual_seed(0)
        self.model = RNNLM(ModelConfig(vocab_size=V, cell=cell, layers=L, hidden=hidden, emb=E)).train()
        self.opt = make_optimizer(self.model, 3e-3, 0.01, torch.device("cpu"))
        self.precision, self.state = precision, None
        g = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        with autocast(torch.device("cpu"), self.precision):
            loss, state = self.model.loss(self.x, self.y, self.state)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def speed(args) -> None:
    for precision in args.precision.split(","):
        for label, sizes in (("equal hidden", {c: H for c in CELLS}),
                             ("equal parameters", {c: equal_params_hidden(c) for c in CELLS})):
            if args.compare not in ("both", label.split()[1]):
                continue
            runs = {c: Trainer(c, sizes[c], precision) for c in CELLS}
            for r in runs.values():
                r.step()  # untimed: first-call costs
            best = {c: 0.0 for c in CELLS}
            ratios = {c: [] for c in CELLS}
            for rnd in range(args.rounds):
                order = CELLS[rnd % len(CELLS):] + CELLS[:rnd % len(CELLS)]
                got = {}
                for c in order:
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        runs[c].step()
                    got[c] = args.steps * B * T / (time.perf_counter() - t0)
                    best[c] = max(best[c], got[c])
                for c in CELLS:
                    ratios[c].append(got[c] / got["lstm"])
            print(f"\ntraining, {precision}, {label} (2 layers, emb {E}, vocab {V}, batch {B} x {T}); "
                  f"load average now {os.getloadavg()[0]:.2f}")
            print(f"{'cell':15}{'hidden':>7}{'params':>11}{'tokens/s':>10}{'x LSTM':>8}")
            for c in CELLS:
                p = n_parameters(V, c, L, sizes[c], E)
                print(f"{c:15}{sizes[c]:>7}{p:>11,}{best[c]:>10,.0f}{statistics.median(ratios[c]):>8.2f}", flush=True)


def scan(args) -> None:
    f = torch.rand(B, T, H).requires_grad_()
    x = torch.randn(B, T, H).requires_grad_()
    c0 = torch.randn(B, H)
    forms = {"blocked scan (used)": S.linear_scan, "step loop, autograd": S.scan_loop, "log-space": S.scan_logspace}
    print(f"\nthe linear recurrence at {B} x {T} x {H}, forward + backward, best of {args.rounds}")
    for name, fn in forms.items():
        times = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            fn(f, x, c0).sum().backward()
            times.append(time.perf_counter() - t0)
        print(f"{name:22}{min(times) * 1e3:8.1f} ms", flush=True)
    for chunk in (4, 8, 16, 32, 64):
        S.CHUNK, times = chunk, []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            S.linear_scan(f, x, c0).sum().backward()
            times.append(time.perf_counter() - t0)
        print(f"blocked, CHUNK {chunk:<3}    {min(times) * 1e3:8.1f} ms", flush=True)


@torch.no_grad()
def sample(args) -> None:
    from charrnn.generation.stepper import Runner, Stepper

    print(f"\nsampling one stream (2x{H}, emb {E}, vocab {V}), {args.tokens} tokens, best of {args.rounds}")
    for c in CELLS:
        torch.manual_seed(0)
        m = RNNLM(ModelConfig(vocab_size=V, cell=c, layers=L, hidden=H, emb=E)).eval()
        st = Stepper(m)
        _, s0 = m(torch.zeros(1, 1, dtype=torch.long))
        best = 0.0
        for _ in range(args.rounds):
            run, tok = Runner(st, st.from_module(s0)), torch.zeros(1, dtype=torch.long)
            t0 = time.perf_counter()
            for _ in range(args.tokens):
                tok = run(tok).argmax(-1)
            best = max(best, args.tokens / (time.perf_counter() - t0))
        print(f"{c:15}{best:>10,.0f} tokens/s", flush=True)


def quality(args) -> None:
    import tempfile

    import charrnn

    corpus = os.path.abspath(args.corpus)
    print(f"\nvalidation bits/char on {corpus}, each cell {args.seconds} s of wall time and {args.equal_steps} steps "
          "(charrnn.train defaults otherwise)")
    with tempfile.TemporaryDirectory() as ck:
        for c in CELLS:
            row = []
            for how in ({"max_time": args.seconds}, {"max_steps": args.equal_steps}):
                r = charrnn.train(corpus, checkpoint_dir=ck, cell=c, name=f"{c}-{next(iter(how))}", verbose=False,
                                  precision="fp32", budget=False, **how)
                row.append(f"{r.best.get('bpc', float('nan')):.3f} bpc at step {r.steps} ({r.elapsed:.0f} s)")
            print(f"{c:15}time: {row[0]:36} steps: {row[1]}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("speed", "scan", "sample", "quality"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="speed: timed steps per round")
    ap.add_argument("--equal-steps", type=int, default=1000, help="quality: the steps of the equal-steps runs")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--compare", choices=("both", "hidden", "parameters"), default="both",
                    help="speed: at equal hidden size, at equal parameter count, or both")
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=250)
    ap.add_argument("--corpus", default=CORPUS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    header(args.threads)
    {"speed": speed, "scan": scan, "sample": sample, "quality": quality}[args.mode](args)


if __name__ == "__main__":
    main()
