"""The matrix product of a one-token step, by the kernel that is fastest on this machine (``Product``).

A sampling step is one product per layer (and one for a full softmax head) of a few rows. Which kernel
multiplies them fastest depends on the CPU, the instruction sets torch and oneDNN may use, the threads,
the torch version, the shape and the number of rows: oneDNN's packed weights win on some CPUs and
batches, plain BLAS ``addmm`` on others, BLAS's matrix-vector ``addmv`` for one stream (faster than
``addmm`` here on one product whose weights stay in cache, slower in the whole step, where they do not),
and the weight layout matters. So the candidates are timed on the model's shapes and row count
(interleaved rounds, the fastest of each counts: a shared machine only ever slows a call down; ~0.1 s for
a 64-row 2x512 LSTM) and the fastest is used: for sampling's loop one kernel for the whole step
(``choose_together``: every layer's weights read in turn, as in the loop), elsewhere per product. The
choice is kept per machine (``machine_id``), shape and row count (rounded up to a power of two) in
``checkpoints/.cache/kernels.json`` (atomic JSON; delete it to time again) and in memory. A candidate
that fails, or whose result disagrees with ``addmm`` on the probe, is not chosen; one that fails later
falls back to ``addmm``.

fp32 candidates give the same products up to float rounding (summation order), so a seed gives
the same samples whichever wins (tests/test_kernels.py shows the bound). bf16 candidates (only with
``--precision bf16``) round the inputs to bfloat16; bias and activation stay fp32.
"""

from __future__ import annotations

import json
import os
import time

import torch

from charrnn.system import compat
from charrnn.system.device import machine_id
from charrnn.system.fileio import atomic_write_bytes

PACK_ROWS = 64        # oneDNN's "onednn" layout is chosen for this batch (the same packing for every row count)
ROUNDS = 5            # interleaved timing rounds per candidate (the minimum counts)
ROUND_S = 2e-3        # each round times repeated calls for about this long
MARGIN = 0.03         # another candidate wins only when it beats the first (the plain one) by this share: closer
                      # than that is timing noise (a wrong choice is cached for good), and the plain one is simplest
CACHE_FILE = "kernels.json"
CACHE_VERSION = 1
FALLBACK = "addmm"
TANH_FORMS = ("sigmoid", "tanh")  # tanh_form's candidates
cache_dir: str | None = None  # None: checkpoints/.cache when ./checkpoints exists (the budget probe's cache)
_memory: dict = {}            # (machine, shape) -> kernel name, for this process
FORCE: str | None = None      # one kernel for every Product whatever the timing (tests that compare bits)


def bucket(rows: int) -> int:
    """Row counts share a choice within powers of two (1, 2, 4, ...; 64 streams and 50 left alike)."""
    return 1 << max(0, rows - 1).bit_length()


def _cache_path() -> str | None:
    d = cache_dir if cache_dir is not None else (os.path.join("checkpoints", ".cache") if os.path.isdir("checkpoints")
                                                 else None)
    return os.path.join(d, CACHE_FILE) if d else None


def _read_cache(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if isinstance(data, dict) and data.get("version") == CACHE_VERSION and isinstance(data.get("machines"), dict):
            return data
    except (OSError, ValueError):
        pass  # missing or damaged: timed again
    return {"version": CACHE_VERSION, "machines": {}}


def cached_choice(machine: str, shape: str) -> str | None:
    hit = _memory.get((machine, shape))
    if hit is None and (path := _cache_path()) and os.path.exists(path):
        hit = _read_cache(path)["machines"].get(machine, {}).get(shape)
        if hit is not None:
            _memory[(machine, shape)] = hit
    return hit


def remember(machine: str, shape: str, name: str) -> None:
    _memory[(machine, shape)] = name
    path = _cache_path()
    if not path:
        return
    try:  # a cache is an optimisation: never fail sampling over it
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = _read_cache(path)
        data["machines"].setdefault(machine, {})[shape] = name
        atomic_write_bytes((json.dumps(data, indent=1, sort_keys=True) + "\n").encode(), path)
    except Exception:  # noqa: BLE001
        pass


class Product:
    """``act(x @ W.T + b)`` for (B, K) fp32 inputs with W (N, K) prepared once; act: none/sigmoid/tanh.

    ``into(x, out)`` writes into ``out`` (B, N) where the kernel can (BLAS ones) and returns the
    result (oneDNN's kernels return a tensor of their own). ``__call__(x)`` allocates the result.
    """

    def __init__(self, w: torch.Tensor, b: torch.Tensor, act: str = "none", dtype: torch.dtype | None = None):
        self.act, self.dtype = act, dtype
        self.w = w.detach().float().contiguous()             # (N, K)
        self.b = b.detach().float().contiguous()
        self.N, self.K = self.w.shape
        self.layouts: dict = {}                              # kernel name -> its prepared weight
        self.failed: set = set()
        self.choice: dict = {}                               # (row bucket, threads) -> kernel name
        self.forced: str | None = None                       # a kernel name to use whatever the timing (tests)

    # -- the candidates
    def candidates(self) -> list:
        """The kernels to time on this CPU. On a GPU one: cuBLAS (the step is captured in a CUDA graph,
        cudagraph.py, where a host timer would measure launches, not the work)."""
        if self.w.device.type != "cpu":
            names = ["mm_bf16"] if self.dtype == torch.bfloat16 else [FALLBACK]
        elif self.dtype == torch.bfloat16:
            names = ["mm_bf16"] + (["onednn_bf16"] if compat.onednn_packing(self.w.device) else [])
        else:
            names = ["addmm", "addmm_nt", "addmm_new", "addmv"] + (["onednn"] if compat.onednn_packing(self.w.device)
                                                                   else [])
        return [n for n in names if n not in self.failed]

    def _layout(self, name: str):
        if name not in self.layouts:
            w = self.w
            self.layouts[name] = {
                "addmm": lambda: w.t().contiguous(),                          # (K, N): x @ W
                "addmm_nt": lambda: w,                                         # (N, K): x @ W.T, as F.linear
                "addmm_new": lambda: self._layout("addmm"),                    # (K, N), a new result tensor
                "addmv": lambda: w,                                            # (N, K): W x, one row at a time
                "onednn": lambda: compat.onednn_pack(w, PACK_ROWS),
                "mm_bf16": lambda: w.t().contiguous().bfloat16(),
                "onednn_bf16": lambda: compat.onednn_pack(w.bfloat16(), PACK_ROWS),
            }[name]()
        return self.layouts[name]

    def _act(self, y: torch.Tensor) -> torch.Tensor:
        if self.act == "sigmoid":
            return y.sigmoid_()
        return y.tanh_() if self.act == "tanh" else y

    def run(self, name: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        lay = self._layout(name)
        if name == "addmm":
            return self._act(torch.addmm(self.b, x, lay, out=out))
        if name == "addmm_nt":
            return self._act(torch.addmm(self.b, x, lay.t(), out=out))
        if name == "addmm_new":  # the same product; torch's out= variant is slower for some shapes
            return self._act(torch.addmm(self.b, x, lay))
        if name == "addmv":  # one row: BLAS's matrix-vector product; more rows: addmm on the same layout
            if x.shape[0] == 1:
                torch.addmv(self.b, lay, x.view(-1), out=out.view(-1))
                return self._act(out)
            return self._act(torch.addmm(self.b, x, lay.t(), out=out))
        if name == "onednn":
            return compat.onednn_linear(x.contiguous(), lay, self.b, self.act)
        if name == "mm_bf16":
            return self._act(torch.mm(x.bfloat16(), lay, out=None).float().add_(self.b))
        if name == "onednn_bf16":
            return self._act(compat.onednn_linear(x.contiguous().bfloat16(), lay, None).float().add_(self.b))
        raise KeyError(name)

    def works(self, name: str) -> bool:
        """Whether kernel ``name`` runs here (one probe row); a failing one is marked failed."""
        if name not in self.candidates():
            return False
        try:
            self.run(name, torch.zeros(1, self.K, device=self.w.device), torch.empty(1, self.N, device=self.w.device))
            return True
        except Exception:  # noqa: BLE001 - e.g. a bf16 path this CPU lacks
            self.failed.add(name)
            return False

    # -- choosing
    def kernel(self, rows: int) -> str:
        if self.forced is not None or FORCE is not None:
            return self.forced or FORCE
        key = (bucket(rows), torch.get_num_threads())
        name = self.choice.get(key)
        if name is None or name in self.failed:
            name = self.choice[key] = self.choose(key[0])
        return name

    def shape_key(self, rows: int) -> str:
        dtype = "bf16" if self.dtype == torch.bfloat16 else "fp32"
        return f"{self.N}x{self.K} {self.act} {dtype} rows {rows}"

    def choose(self, rows: int) -> str:
        """The fastest working candidate at ``rows`` rows: from the cache, else timed (then cached)."""
        names = self.candidates()
        if len(names) <= 1:
            return names[0] if names else FALLBACK
        machine, shape = machine_id(), self.shape_key(rows)
        hit = cached_choice(machine, shape)
        if hit in names:
            return hit
        best = time_candidates(self, names, rows)
        remember(machine, shape, best)
        return best

    def into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        name = self.kernel(x.shape[0])
        try:
            return self.run(name, x, out)
        except Exception:  # noqa: BLE001 - a kernel that fails here (another torch, odd input): the fallback
            if name == FALLBACK or self.forced is not None or FORCE is not None:
                raise
            self.failed.add(name)
            self.choice = {r: FALLBACK if n == name else n for r, n in self.choice.items()}
            return self.run(FALLBACK if self.dtype is None else "mm_bf16", x, out)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.into(x, torch.empty(x.shape[0], self.N, device=x.device))


def time_candidates(p: Product, names: list, rows: int) -> str:
    """The candidate with the fastest call at ``rows`` rows (interleaved rounds; the minimum counts).
    A candidate that raises or disagrees with the reference is dropped (and marked failed)."""
    gen = torch.Generator(device=p.w.device).manual_seed(0)
    x = torch.rand(rows, p.K, generator=gen, device=p.w.device).mul_(2).sub_(1)
    out = torch.empty(rows, p.N, device=p.w.device)
    ref = p.run(FALLBACK if p.dtype is None else "mm_bf16", x, torch.empty_like(out)).clone()
    tol = 1e-4 if p.dtype is None else 5e-2  # a sanity check of the kernel, not a rounding test
    calls = {}
    for name in names:
        try:
            y = p.run(name, x, out)
            if not torch.allclose(y, ref, atol=tol, rtol=tol):
                raise ValueError("disagrees with addmm")
            calls[name] = lambda name=name: p.run(name, x, out)
        except Exception:  # noqa: BLE001 - a candidate that fails is not chosen
            p.failed.add(name)
    return fastest(calls) if calls else FALLBACK


def fastest(calls: dict, cap: int = 200) -> str:
    """The name of the fastest of the given no-argument calls: each is repeated for about ``ROUND_S``
    per round, in ``ROUNDS`` interleaved rounds, and its fastest round counts (a shared machine only
    ever slows a call down). The first call is the reference: another must beat it by ``MARGIN``."""
    reps, best = {}, {}
    for name, call in calls.items():
        t0 = time.perf_counter()
        call()
        reps[name] = max(1, min(cap, int(ROUND_S / max(time.perf_counter() - t0, 1e-7))))
        best[name] = float("inf")
    for _ in range(ROUNDS):
        for name, call in calls.items():
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                call()
            best[name] = min(best[name], (time.perf_counter() - t0) / reps[name])
    first, win = next(iter(best)), min(best, key=best.get)
    return win if best[win] < (1 - MARGIN) * best[first] else first


def choose_together(products: list, rows: int) -> str:
    """One kernel for all the products of a step, the one whose whole step is fastest at ``rows`` rows
    (the step reads every layer's weights in turn, as sampling does, so a layout that wins on one
    product alone with its weights in cache may lose in the loop); cached like a single choice."""
    key = (bucket(rows), torch.get_num_threads())
    names = [n for n in products[0].candidates() if all(n in p.candidates() for p in products)]
    if not names:
        return FALLBACK
    machine, shape = machine_id(), " + ".join(p.shape_key(key[0]) for p in products)
    best = cached_choice(machine, shape)
    if best not in names:
        best = names[0] if len(names) == 1 else time_step(products, names, key[0])
        remember(machine, shape, best)
    for p in products:
        p.choice[key] = best
    return best


def time_step(products: list, names: list, rows: int) -> str:
    """The candidate with the fastest pass over every product (interleaved rounds; the minimum counts);
    one that raises or disagrees with the reference on any product is dropped there."""
    gen = torch.Generator().manual_seed(0)
    xs = [torch.rand(rows, p.K, generator=gen).to(p.w.device).mul_(2).sub_(1) for p in products]
    outs = [torch.empty(rows, p.N, device=p.w.device) for p in products]
    for p, x in zip(products, xs):
        ref = p.run(FALLBACK if p.dtype is None else "mm_bf16", x, torch.empty(rows, p.N, device=x.device)).clone()
        tol = 1e-4 if p.dtype is None else 5e-2
        for name in names:
            try:
                if not torch.allclose(p.run(name, x, torch.empty_like(ref)), ref, atol=tol, rtol=tol):
                    raise ValueError("disagrees with addmm")
            except Exception:  # noqa: BLE001 - a candidate that fails is not chosen
                p.failed.add(name)
    names = [n for n in names if all(n not in p.failed for p in products)]
    if len(names) <= 1:
        return names[0] if names else FALLBACK

    def step(name):  # as the Runner's step: an LSTM's gates are four views, cut again from a new result
        for p, x, out in zip(products, xs, outs):
            y = p.run(name, x, out)
            if y is not out and p.act == "sigmoid":
                y.chunk(4, 1)

    return fastest({name: lambda name=name: step(name) for name in names}, cap=100)


def tanh_form(width: int, rows: int, device=None) -> str:
    """How an LSTM step takes h = o tanh(c) for (rows, width) states: ``"sigmoid"`` (tanh(c) as
    2 sigmoid(2c) - 1: torch's vectorised tanh costs several times its sigmoid on AVX2 builds) or
    ``"tanh"`` (fewer ops, and the faster one where ATen runs without vector kernels), whichever is
    faster here; timed once and cached like a kernel. Off the CPU: "sigmoid" (no timing)."""
    if FORCE is not None or (device is not None and torch.device(device).type != "cpu"):
        return "sigmoid"
    rows, machine = bucket(rows), machine_id()
    shape = f"lstm tanh(c) {width} rows {rows}"
    hit = cached_choice(machine, shape)
    if hit in TANH_FORMS:
        return hit
    gen = torch.Generator().manual_seed(0)
    c, o = (torch.rand(rows, width, generator=gen) for _ in range(2))
    t, h = torch.empty_like(c), torch.empty_like(c)

    def sigmoid():
        torch.add(c, c, out=t).sigmoid_()
        torch.mul(o, t, out=h)
        h.add_(h).sub_(o)

    def tanh():
        torch.tanh(c, out=t)
        torch.mul(o, t, out=h)

    best = fastest({"tanh": tanh, "sigmoid": sigmoid})  # torch.tanh first: the plain form
    remember(machine, shape, best)
    return best
