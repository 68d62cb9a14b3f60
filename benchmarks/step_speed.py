"""charrnn's training step against a bare nn.Embedding + nn.LSTM + nn.Linear + AdamW step, in one process.

    python benchmarks/step_speed.py [--threads N] [--precision fp32,bf16] [--rounds 7] [--steps 2]
        [--vocab 65] [--ablation] [--profile]
    python benchmarks/step_speed.py --target [--thread-list 1,2] [--isa native,emulated] [--rounds 7]

Both sides train the default model shape (charrnn.settings: lstm 2x512, emb 64) at batch 32 x 128 on
the same random token windows (int32 streams cut into int64 windows by ``StreamBatcher.window``, as
in training), the hidden state carried from window to window and detached.

bare: ``nn.Embedding -> nn.LSTM(batch_first) -> nn.Linear``, PyTorch's default initialisation, one
AdamW with torch's defaults on the CPU (the per-tensor loop) over all parameters (lr 3e-3, weight
decay 0.01), and per step: forward and cross-entropy (under ``torch.autocast`` for bf16), backward,
``clip_grad_norm_(1.0)``, ``opt.step()``, ``opt.zero_grad()``. Dropout, where a row asks for it,
sits where charrnn puts it (embeddings, between layers, before the output layer).
charrnn: ``RNNLM`` built by ``ModelConfig.from_settings`` from the defaults (its initialisation and
unigram output bias), the optimizer of ``Trainer._optimizer`` (step.make_optimizer: two parameter
groups, fused), the ``StepRunner`` of step.py, and ``Trainer._train_step`` itself run on a stub
trainer: the learning rate set from the schedule, zero_grad, forward/backward under charrnn's
autocast, clipping, the loss and norm read with ``.item()``/``float``, the finiteness check, the
optimizer step, the state detached. Not included: the loop's bookkeeping (``_account``: progress
bar, log window), evaluation and saving.

Rows: "equal" compares both sides at the same dropout (0.1, charrnn's default, and 0); "defaults"
is a bare script without dropout against charrnn's defaults; ``--ablation`` adds charrnn with
torch's per-tensor AdamW (its optimizer before step.make_optimizer fused it on the CPU). The sides
run in turn (ABAB..., the order reversed every other round), ``--steps`` timed steps each, for
``--rounds`` rounds. With one thread, tokens/s, GFLOP/s and the ratio come from CPU seconds (what a
machine of one's own would show; steady on a shared one), the ratio the median of the per-round
ratios; with more threads CPU time counts spinning threads, so they come from each side's best
wall-clock round. The median of the per-round wall-clock ratios is printed beside them. GFLOP/s
counts the model's matrix products (3x the forward's: forward, input and weight gradients). The
roofline runs the step's B*T-row products (input projections, the head, weight gradients) at the
rate of the input projections' GEMMs (B*T rows) and its sequential recurrent products (h @ W_hh
forward and backward, T steps of B rows) at that of a B-row GEMM, each the thread count times one
core's rate: each GEMM is timed with one thread in CPU time (multi-thread wall-clock GEMM timings
are not steady on a shared machine) through torch.mm (MKL for fp32, oneDNN for bf16) and through
oneDNN's inner product, and the faster counts (on AMD CPUs MKL's fp32 GEMM runs far below
oneDNN's). ``--profile`` instead profiles a few of charrnn's steps with torch.profiler (where the
time goes).

``--target`` prints only issue #20's row, quickly (~20-60 s per configuration): charrnn's defaults
(dropout 0.1, fp32) against a bare step without dropout, with a bare step with torch's dropout 0.1
beside them (what torch's own masks cost), for 1 and 2 threads and for this CPU's ISA and the
emulated one (``ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=AVX2``, set in a child process
before torch is imported), with the CPU model and the load average. Target: >= 0.97.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from charrnn.data.batching import StreamBatcher  # noqa: E402
from charrnn.model.network import ModelConfig, RNNLM  # noqa: E402
from charrnn.system.device import autocast  # noqa: E402
from charrnn.settings import make_config  # noqa: E402
from charrnn.training.step import StepRunner  # noqa: E402
from charrnn.training.trainer import Trainer  # noqa: E402

CPU = torch.device("cpu")


def lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        from charrnn.system.device import cpu_model
        return cpu_model()


class Bare(nn.Module):
    def __init__(self, V, emb, hidden, layers, dropout):
        super().__init__()
        self.embed, self.drop = nn.Embedding(V, emb), nn.Dropout(dropout)
        self.rnn = nn.LSTM(emb, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.out = nn.Linear(hidden, V)

    def forward(self, x, state):
        h, state = self.rnn(self.drop(self.embed(x)), state)
        return self.out(self.drop(h)), state


class BareSide:
    """The plain-PyTorch training step."""

    def __init__(self, cfg, V, dropout, precision):
        self.model = Bare(V, cfg.emb, cfg.hidden, cfg.layers, dropout).train()
        self.params = list(self.model.parameters())  # torch's default AdamW: the per-tensor loop on the CPU
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.bf16, self.state = precision == "bf16", None

    def step(self, x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            logits, state = self.model(x, self.state)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad()
        self.state = tuple(s.detach() for s in state)


class CharrnnSide:
    """charrnn's model, optimizer, StepRunner and Trainer._train_step on a stub trainer."""

    def __init__(self, cfg, V, precision, counts, loop_adamw=False):
        t = Trainer.__new__(Trainer)  # only what _train_step and _optimizer read
        t.cfg, t.device, t.precision, t.log = cfg, CPU, precision, print
        t.model = RNNLM(ModelConfig.from_settings(cfg, V)).to(CPU)
        t.model.init_output_bias(counts)
        t.model.train()
        t.params = list(t.model.parameters())
        t.opt = t._optimizer()
        if loop_adamw:  # the ablation: torch's default per-tensor AdamW on the CPU, charrnn's groups
            t.opt = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]}
                                       for g in t.opt.param_groups], lr=cfg.lr, betas=(0.9, 0.99))
        t._step = StepRunner(t.model, t.opt, CPU, lambda: autocast(CPU, precision), t.log, cfg.skip_nonfinite)
        t.step, t.epoch, t.k, t.skipped, t.elapsed, t.state = 0, 0, 0, 0, 0.0, None
        t.batcher = type("B", (), {"windows_per_epoch": 10 ** 9})()
        t._end = type("E", (), {"end": lambda self: 0.0})()  # schedule.EndOfRun: no time kept for the end
        self.t = t

    def step(self, x, y):
        self.t._train_step(x, y)


def model_flops(cfg, V, B, T) -> tuple[float, float]:
    """(all matrix-product FLOPs of a training step, the part in sequential B-row recurrent products)."""
    H, fwd, rec = cfg.hidden, 0.0, 0.0
    for layer in range(cfg.layers):
        d = cfg.emb if layer == 0 else H
        fwd += 2 * B * T * (d + H) * 4 * H
        rec += 2 * 2 * B * T * H * 4 * H  # h @ W_hh forward, and dh @ W_hh^T backward, T steps of B rows
    fwd += 2 * B * T * H * V
    return 3 * fwd, rec


def _cpu_seconds(fn) -> float:
    """The CPU seconds fn takes: with one thread, its wall time on a machine of its own."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def gemm_rates(m, k, n, dtype, seconds=1.0) -> dict:
    """One core's GFLOP/s of (m x k) @ (k x n) in dtype through torch.mm (MKL for fp32, oneDNN for bf16)
    and through oneDNN's inner product (torch._C._nn.mkldnn_linear): the best of repeated single calls
    in CPU time (steady on a shared machine, unlike multi-thread wall-clock timings)."""
    a, w = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
    wt, am, c = w.t().contiguous(), a.to_mkldnn(), torch.empty(m, n, dtype=dtype)
    out = {}
    for name, fn in (("mm", lambda: torch.mm(a, wt, out=c)),
                     ("onednn", lambda: torch._C._nn.mkldnn_linear(am, w, None))):
        try:
            fn()
        except RuntimeError:
            continue
        best, end = math.inf, time.perf_counter() + seconds
        while time.perf_counter() < end:
            best = min(best, _cpu_seconds(fn))
        out[name] = 2 * m * k * n / best / 1e9
    return out


def _keep_freed_memory() -> None:
    """glibc: large freed blocks stay in the heap, so a GEMM's 32 MB output is not a fresh mapping (page
    faults) on every call. Called after the steps are timed; elsewhere a no-op."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def roofline(cfg, V, B, T, dtype, threads) -> dict:
    """The step at ``threads`` x one core's best GEMM rate: its B*T-row products at the input
    projections' rate, its sequential B-row products at the recurrent one's (an upper limit: GEMMs
    of B rows do not scale perfectly over threads)."""
    H = cfg.hidden
    shapes = {"in0": (B * T, cfg.emb, 4 * H), "in1": (B * T, H, 4 * H), "rec": (B, H, 4 * H)}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    _keep_freed_memory()
    try:
        rates = {k: gemm_rates(*shape, dtype) for k, shape in shapes.items()}
    finally:
        torch.set_num_threads(before)
    best = {k: threads * max(r.values()) for k, r in rates.items()}
    fl = {k: 2 * m * kk * n for k, (m, kk, n) in shapes.items()}
    big = (fl["in0"] + fl["in1"]) / (fl["in0"] / best["in0"] + fl["in1"] / best["in1"])
    total, rec = model_flops(cfg, V, B, T)
    return {"big": big, "small": best["rec"], "roof": total / ((total - rec) / big + rec / best["rec"]),
            "rates": rates, "shapes": shapes}


def run_precision(cfg, V, precision, rounds, steps, B, T, ablation=False, seed=0, target=False) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    n_windows = (rounds * steps + 4) * 2 * 2
    ids = torch.randint(V, (B * (n_windows * T + 1),), generator=g, dtype=torch.int32).numpy()
    counts = np.bincount(ids, minlength=V)
    batcher = StreamBatcher(ids, B, T, seed)
    streams = batcher.epoch_streams(0)
    d, threads = cfg.dropout, torch.get_num_threads()
    if target:  # only what the target's row needs, and torch's own dropout for scale
        sides = {"bare d=0": BareSide(cfg, V, 0.0, precision), "charrnn d=0.1": CharrnnSide(cfg, V, precision, counts),
                 "bare d=0.1": BareSide(cfg, V, d, precision)}
    else:
        sides = {"bare d=0.1": BareSide(cfg, V, d, precision),
                 "charrnn d=0.1": CharrnnSide(cfg, V, precision, counts), "bare d=0": BareSide(cfg, V, 0.0, precision),
                 "charrnn d=0": CharrnnSide(make_config(**{**cfg.to_dict(), "dropout": 0.0}), V, precision, counts)}
    if ablation:
        sides["charrnn d=0.1 loop AdamW"] = CharrnnSide(cfg, V, precision, counts, loop_adamw=True)
    wall, cpu = {name: [] for name in sides}, {name: [] for name in sides}
    k = {name: 0 for name in sides}

    def run(name, n):
        side = sides[name]

        def steps_():
            for _ in range(n):
                x, y = batcher.window(streams, k[name] % batcher.windows_per_epoch)
                k[name] += 1
                side.step(x, y)

        t0 = time.perf_counter()
        c = _cpu_seconds(steps_)
        wall[name].append((time.perf_counter() - t0) / n)
        cpu[name].append(c / n)

    for name in sides:  # warm-up: AdamW state, kernel choices
        run(name, 2)
        wall[name].clear(), cpu[name].clear()
    for r in range(rounds):
        for name in (list(sides) if r % 2 == 0 else list(reversed(sides))):
            run(name, steps)
        print(f"{precision}: round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    tok = B * T
    total, _ = model_flops(cfg, V, B, T)

    def row(label, bare, ours):
        rw = [tb / tc for tb, tc in zip(wall[bare], wall[ours])]
        if threads == 1:  # CPU time, paired by round
            rc = [tb / tc for tb, tc in zip(cpu[bare], cpu[ours])]
            t_bare, t_ours, ratio = statistics.median(cpu[bare]), statistics.median(cpu[ours]), statistics.median(rc)
        else:  # the best round of each side: a shared machine only ever slows a step down
            t_bare, t_ours = min(wall[bare]), min(wall[ours])
            ratio = t_bare / t_ours
        return {"precision": precision, "row": label, "ratio": ratio, "ratio_wall": statistics.median(rw),
                "range_wall": (min(rw), max(rw)), "tok_bare": tok / t_bare, "tok_ours": tok / t_ours,
                "gflops_bare": total / t_bare / 1e9, "gflops": total / t_ours / 1e9}

    if target:
        return [row("defaults (bare d=0, charrnn d=0.1)", "bare d=0", "charrnn d=0.1"),
                row("torch's dropout (bare d=0, bare d=0.1)", "bare d=0", "bare d=0.1")]
    rows = [row("equal, dropout 0.1", "bare d=0.1", "charrnn d=0.1"),
            row("equal, dropout 0", "bare d=0", "charrnn d=0"),
            row("defaults (bare d=0, charrnn d=0.1)", "bare d=0", "charrnn d=0.1")]
    if ablation:
        rows.append(row("ablation: dropout 0.1, charrnn with per-tensor AdamW", "bare d=0.1",
                        "charrnn d=0.1 loop AdamW"))
    return rows


def profile_charrnn(cfg, V, precision, B, T, steps=3, top=12) -> None:
    """torch.profiler over a few of charrnn's steps: the ops with the most self CPU time, and the
    share of the fused LSTM kernels, dropout's mask draws and the optimizer."""
    from torch.profiler import ProfilerActivity, profile, record_function

    import charrnn.model.regularise as regularise
    real_mask = getattr(regularise, "dropout_mask", None)  # absent before issue #20

    def dropout_mask(*a, **kw):  # charrnn's masks, as one profiler range
        with record_function("charrnn::dropout_mask"):
            return real_mask(*a, **kw)

    if real_mask is not None:
        regularise.dropout_mask = dropout_mask
    ids = torch.randint(V, (B * ((steps + 4) * T + 1),), dtype=torch.int32).numpy()
    batcher = StreamBatcher(ids, B, T, 0)
    streams = batcher.epoch_streams(0)
    side = CharrnnSide(cfg, V, precision, np.bincount(ids, minlength=V))
    for k in range(2):
        side.step(*batcher.window(streams, k))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for k in range(2, 2 + steps):
            side.step(*batcher.window(streams, k))
    if real_mask is not None:
        regularise.dropout_mask = real_mask
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    share = lambda pred: sum(e.self_cpu_time_total for e in events if pred(e.key)) / total  # noqa: E731
    masks = sum(e.cpu_time_total for e in prof.key_averages() if e.key == "charrnn::dropout_mask") / total
    print(f"profile of charrnn's step, {precision}, dropout {cfg.dropout}: {total / steps / 1e3:.0f} ms self CPU "
          f"per step; fused LSTM kernels {share(lambda k: 'rnn_layer' in k or 'RnnLayer' in k):.1%}, "
          f"dropout masks (bernoulli_ {share(lambda k: 'bernoulli' in k):.1%}, charrnn's dropout_mask {masks:.1%}), "
          f"optimizer {share(lambda k: 'adam' in k.lower()):.1%}, "
          f"head GEMMs (mm) {share(lambda k: k == 'aten::mm'):.1%}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
        print(f"  {e.key[:60]:60s} {e.self_cpu_time_total / steps / 1e3:8.1f} ms/step "
              f"{e.count // steps:4d} calls/step")


EMULATED = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2"}  # issue #20's emulated ISA


def target_one(cfg, V, precision, rounds, steps, B, T) -> None:
    """One configuration of ``--target`` (run in a child process: the ISA is read at torch's import):
    its two rows as one JSON line on stdout."""
    load0 = os.getloadavg()
    rows = run_precision(cfg, V, precision, rounds, steps, B, T, target=True)
    print(json.dumps({"rows": rows, "threads": torch.get_num_threads(), "load": (load0[0], os.getloadavg()[0]),
                      "isa": torch.backends.cpu.get_cpu_capability()}))


def target(args) -> None:
    """Issue #20's target row: charrnn's defaults (dropout 0.1) against a bare step without dropout,
    for each thread count and ISA (this CPU's own, and EMULATED), one child process each."""
    configs = [(threads, isa) for isa in args.isa.split(",") for threads in map(int, args.thread_list.split(","))]
    cfg = make_config(precision="fp32", device="cpu")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; CPU: {lscpu_model()}; torch {torch.__version__}; "
          f"lstm {cfg.layers}x{cfg.hidden}, emb {cfg.emb}, vocab {args.vocab}, batch {cfg.batch_size} x "
          f"{cfg.seq_len}, {args.precision.split(',')[0]}; {args.rounds} rounds x {args.steps} steps per side")
    print()
    print("| ISA (torch's capability) | threads | bare d=0 tok/s | charrnn defaults tok/s | **defaults / bare d=0** "
          "| wall, median of rounds (min-max) | torch's dropout: bare d=0.1 / bare d=0 | load average before, after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for threads, isa in configs:  # each row as soon as it is measured
        env = {k: v for k, v in os.environ.items() if k not in EMULATED}
        env.update(EMULATED if isa == "emulated" else {}, OMP_NUM_THREADS=str(threads))
        cmd = [sys.executable, os.path.abspath(__file__), "--target-one", "--threads", str(threads),
               "--precision", args.precision.split(",")[0], "--rounds", str(args.rounds), "--steps", str(args.steps)]
        print(f"target: {threads} thread(s), ISA {isa} ...", file=sys.stderr, flush=True)
        res = json.loads(subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True,
                                        check=True).stdout.strip().splitlines()[-1])
        d, torch_d = res["rows"]
        lo, hi = d["range_wall"]
        name = f"native ({res['isa']})" if isa == "native" else " ".join(f"{k}={v}" for k, v in EMULATED.items()) \
            + f" ({res['isa']})"
        print(f"| {name} | {threads} | {d['tok_bare']:,.0f} | {d['tok_ours']:,.0f} | **{d['ratio']:.3f}** | "
              f"{d['ratio_wall']:.3f} ({lo:.2f}-{hi:.2f}) | {torch_d['ratio']:.3f} | "
              f"{res['load'][0]:.2f}, {res['load'][1]:.2f} |", flush=True)
    print()
    print("ratio: 1 thread, CPU seconds, median of the per-round ratios; 2 threads, each side's best wall-clock "
          "round. Target (issue #20): defaults / bare d=0 >= 0.97.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per side per round")
    ap.add_argument("--vocab", type=int, default=65, help="vocabulary size (tinyshakespeare: 65)")
    ap.add_argument("--ablation", action="store_true", help="also charrnn with torch's per-tensor AdamW")
    ap.add_argument("--profile", action="store_true", help="only profile charrnn's step (torch.profiler)")
    ap.add_argument("--target", action="store_true",
                    help="only issue #20's row (charrnn's defaults / a bare step without dropout), one child process "
                         "per thread count and ISA")
    ap.add_argument("--thread-list", default="1,2", help="--target: the thread counts")
    ap.add_argument("--isa", default="native,emulated",
                    help="--target: native (this CPU's) and/or emulated (" + " ".join(f"{k}={v}" for k, v in
                                                                                    EMULATED.items()) + ")")
    ap.add_argument("--target-one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.target:
        if args.precision == "fp32,bf16":
            args.precision = "fp32"  # the defaults' precision on a CPU without AMX
        return target(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    cfg = make_config(precision="fp32", device="cpu")
    B, T, V = cfg.batch_size, cfg.seq_len, args.vocab
    if args.profile:
        for precision in args.precision.split(","):
            profile_charrnn(cfg, V, precision, B, T)
        return
    if args.target_one:
        return target_one(cfg, V, args.precision.split(",")[0], args.rounds, args.steps, B, T)
    load0 = os.getloadavg()
    rows, roofs = [], {}
    for precision in args.precision.split(","):
        rows += run_precision(cfg, V, precision, args.rounds, args.steps, B, T, args.ablation)
    for precision in args.precision.split(","):  # after every step is timed (it changes the allocator)
        roofs[precision] = roofline(cfg, V, B, T, torch.bfloat16 if precision == "bf16" else torch.float32, threads)
    load1 = os.getloadavg()
    total, rec = model_flops(cfg, V, B, T)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; CPU: {lscpu_model()}; {threads} threads; "
          f"torch {torch.__version__}; load average {load0[0]:.2f} before, {load1[0]:.2f} after")
    print(f"model: lstm {cfg.layers}x{cfg.hidden}, emb {cfg.emb}, vocab {V}; batch {B} x {T}; "
          f"{total / 1e9:.1f} GFLOP per step ({rec / 1e9:.1f} in the B-row recurrent products); "
          f"{args.rounds} rounds x {args.steps} steps per side")
    print()
    clock = "CPU time, median of rounds" if threads == 1 else "wall clock, best round"
    print(f"| precision | comparison | bare tok/s | charrnn tok/s | ratio ({clock}) | ratio (wall clock, median of "
          "per-round ratios, min-max) | bare GFLOP/s | charrnn GFLOP/s | GEMM B*T rows | GEMM B rows | roofline "
          "| charrnn / roofline |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rf = roofs[r["precision"]]
        lo, hi = r["range_wall"]
        print(f"| {r['precision']} | {r['row']} | {r['tok_bare']:,.0f} | {r['tok_ours']:,.0f} | **{r['ratio']:.3f}** "
              f"| {r['ratio_wall']:.3f} ({lo:.2f}-{hi:.2f}) | {r['gflops_bare']:.0f} | {r['gflops']:.0f} "
              f"| {rf['big']:.0f} | {rf['small']:.0f} | {rf['roof']:.0f} | {r['gflops'] / rf['roof']:.0%} |")
    print()
    print(f"tok/s, GFLOP/s and the first ratio: {clock} (one thread: CPU seconds, what a machine of one's own "
          "would show; more threads: CPU time counts spinning threads, so the best wall-clock round). GEMM "
          f"columns and roofline: {threads} x one core's best GEMM; one core's GFLOP/s (CPU time, best call; "
          "the faster counts):")
    for precision, rf in roofs.items():
        parts = [f"{m}x{k}x{n}: " + ", ".join(f"{lib} {v:.0f}" for lib, v in rf["rates"][key].items())
                 for key, (m, k, n) in rf["shapes"].items()]
        print(f"  {precision}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
