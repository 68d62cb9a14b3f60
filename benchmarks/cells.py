"""The cells of model/cells (QRNN, SRU, IndRNN, JANET, peephole LSTM) raced against the fused nn.LSTM.

    python benchmarks/cells.py speed   [--threads 2] [--rounds 5] [--steps 3] [--precision fp32,bf16]
                                       [--compare both|hidden|parameters]
    python benchmarks/cells.py scan    [--threads 2]             # the scan's forms, forward+backward
    python benchmarks/cells.py sample  [--threads 2] [--tokens 300]
    python benchmarks/cells.py quality [--seconds 250] [--parallel 2] [--rows 'lstm sru sru:layers=4'] [--corpus PATH]

speed: training tokens/s of one charrnn training step (RNNLM, the trainer's AdamW, forward + loss +
backward + clipping + update, the state carried and detached) of each cell against the LSTM, at equal
hidden size (2x512, emb 64, vocab 65, batch 32 x 128: the defaults) and at equal parameter count (the
cell's hidden size chosen so its model has the LSTM's parameters, model/sizes.py). The cells run in
turn, the order rotated every round, ``--steps`` timed steps each after one untimed step; a cell's
figure is its best round, the ratio the median over rounds of (cell / LSTM in the same round).
scan: the blocked scan (scan.linear_scan, custom backward) against a step loop with autograd through
it and the log-space form, forward + backward at 32 x 128 x 512. sample: tokens/s of one stream
stepped by generation/stepper.py (the LSTM by the Runner, as charrnn sample does). quality: each row (a cell,
or a cell with settings) trained on tinyshakespeare with charrnn.train's defaults otherwise for
``--seconds`` of wall time, in a process of its own with one thread, ``--parallel`` rows side by side
each pinned to its own core: the best validation bits/char (best.pt on the whole split), and the
validation loss at the last step every row reached (equal steps, from the periodic evaluations). Every mode prints the date, CPU model, thread count and load average first.
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


def _race_one(spec: str, corpus: str, ck: str, seconds: float, eval_every: int, core: int | None) -> None:
    """One row of the race in this process (a child): 1 thread, pinned to ``core``; prints a JSON line."""
    import json

    import charrnn

    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    cell, _, extra = spec.partition(":")
    kw = {k: int(v) for k, v in (p.split("=") for p in extra.split(",") if p)}
    r = charrnn.train(corpus, checkpoint_dir=ck, cell=cell, name=spec.replace(":", "-").replace("=", "").replace(",", "-"),
                      verbose=False, precision="fp32", budget=False, max_time=seconds, eval_every=eval_every,
                      eval_tokens=16384, **kw)
    curve = {}
    with open(os.path.join(r.run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            m = json.loads(line)
            if m.get("split") == "val" and m.get("scope") is None:
                curve[m["step"]] = m["loss"]
    print(json.dumps({"spec": spec, "bpc": r.best.get("bpc"), "loss": r.best.get("loss"), "scope": r.best.get("scope"),
                      "steps": r.steps, "elapsed": r.elapsed, "curve": curve}), flush=True)


def quality(args) -> None:
    """Each row trained for ``--seconds`` of wall time in a process of its own, one thread, ``--parallel``
    at a time (each pinned to its own core: runs side by side get the same share of the machine)."""
    import json
    import subprocess
    import tempfile

    corpus = os.path.abspath(args.corpus)
    rows = args.rows.split() if args.rows else CELLS
    print(f"\nvalidation on {corpus}: each row {args.seconds:g} s of wall time, 1 thread, {args.parallel} at a time "
          f"(charrnn.train's defaults otherwise; evaluations every {args.eval_every} steps on 16,384 tokens)", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as ck:
        for i in range(0, len(rows), args.parallel):
            procs = [subprocess.Popen([sys.executable, __file__, "race-one", "--row", spec, "--corpus", corpus,
                                       "--seconds", str(args.seconds), "--eval-every", str(args.eval_every),
                                       "--core", str(j % (os.cpu_count() or 1)), "--ck", ck],
                                      stdout=subprocess.PIPE, text=True)
                     for j, spec in enumerate(rows[i:i + args.parallel])]
            for p in procs:
                out, _ = p.communicate()
                results.append(json.loads(out.strip().splitlines()[-1]))
    steps = set.intersection(*({int(s) for s in r["curve"]} for r in results))
    common = max(steps, default=0)  # the last evaluation every row made (equal steps)
    ref = next((r for r in results if r["spec"] == "lstm"), results[0])
    print(f"\n| row | steps in {args.seconds:g} s | best val bits/char (best.pt, whole split) | vs {ref['spec']} (nats/char) | "
          f"val nats/char at step {common} (est.) |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        at = r["curve"].get(str(common))
        print(f"| {r['spec']} | {r['steps']:,} | {r['bpc']:.3f} | {r['loss'] - ref['loss']:+.3f} | "
              f"{at if at is None else f'{at:.3f}'} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("speed", "scan", "sample", "quality", "race-one"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="speed: timed steps per round")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--compare", choices=("both", "hidden", "parameters"), default="both",
                    help="speed: at equal hidden size, at equal parameter count, or both")
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=250)
    ap.add_argument("--corpus", default=CORPUS)
    ap.add_argument("--rows", help="quality: rows 'CELL[:setting=int,...]' separated by spaces (default: every cell), "
                                   "e.g. 'lstm sru sru:layers=4 lstm:attention=64'")
    ap.add_argument("--parallel", type=int, default=2, help="quality: rows trained at a time, one thread each")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--row", help=argparse.SUPPRESS)
    ap.add_argument("--core", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ck", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode == "race-one":
        return _race_one(args.row, args.corpus, args.ck, args.seconds, args.eval_every, args.core)
    torch.set_num_threads(args.threads)
    header(args.threads)
    {"speed": speed, "scan": scan, "sample": sample, "quality": quality}[args.mode](args)


if __name__ == "__main__":
    main()
