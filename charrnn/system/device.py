"""Device and numeric-precision choices shared by training, evaluation and sampling."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys

import torch

from charrnn.errors import CharrnnError
from charrnn.settings import DEVICES, PRECISIONS
from charrnn.system import compat


def mps_available() -> bool:
    """Apple's Metal GPU (Apple-silicon Macs with a PyTorch build that has MPS)."""
    mps = getattr(torch.backends, "mps", None)
    try:
        return bool(mps is not None and mps.is_available())
    except Exception:  # noqa: BLE001 - an unusual build; absent means "not available"
        return False


def resolve_device(name: str) -> torch.device:
    """auto: CUDA, else Apple's MPS, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharrnnError("--device cuda was asked for, but no CUDA GPU is available; use --device cpu or auto")
    if name == "mps" and not mps_available():
        raise CharrnnError("--device mps was asked for, but Apple's MPS is not available (it needs an "
                           "Apple-silicon Mac and a PyTorch build with MPS); use --device cpu or auto")
    if name not in DEVICES:
        raise CharrnnError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True where the CPU has AMX tiles, which make bf16 autocast training ~3x faster than fp32."""
    return compat.cpu_has_amx()


def cpu_multiplies_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX) and oneDNN can use it."""
    return compat.onednn_packing("cpu") and compat.cpu_has_bf16_dot()


_said = set()  # one-line notes already given in this process


def _note_once(log, line: str) -> None:
    if line not in _said:
        _said.add(line)
        (log or (lambda m: print(m, file=sys.stderr)))(line)


def resolve_precision(precision: str, device: torch.device, sampling: bool = False, log=None) -> str:
    """The one precision rule, for training, evaluation and sampling.

    fp32 and bf16 are what they say. auto: bf16 autocast for training and scoring on CPUs with AMX
    (~3x faster there), fp32 with TF32 matmuls on CUDA, plain fp32 elsewhere; sampling's auto is
    always fp32, so that a seed gives the same text for the same checkpoint on every CPU (bf16
    rounding depends on the kernels a CPU has). Sampling with bf16 asked on a CPU that does not
    multiply bf16 in hardware says so in one line and samples in fp32 (emulated bf16 is slower).
    """
    if precision not in PRECISIONS:
        raise CharrnnError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if sampling:
        if precision == "bf16" and device.type == "cpu" and not cpu_multiplies_bf16():
            _note_once(log, "--precision bf16: this CPU does not multiply bf16 in hardware (no AVX512-BF16 or AMX); "
                            "sampling in fp32")
            return "fp32"
        return "bf16" if precision == "bf16" else "fp32"
    if precision != "auto":
        return precision
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


def machine_id() -> str:
    """What a kernel timing depends on: CPU model, the instruction sets torch and oneDNN may use,
    threads and the torch version."""
    isa = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else "?"
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "") or os.environ.get("DNNL_MAX_CPU_ISA", "")
    return (f"{cpu_model()} | {isa}{' onednn ' + onednn if onednn else ''} | {torch.get_num_threads()} threads | "
            f"torch {torch.__version__}")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def setup_backend(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, precision: str):
    """bf16 autocast (fp32: nothing). On a CPU whose oneDNN has no bf16 LSTM (AVX2-only CPUs, or
    ONEDNN_MAX_CPU_ISA below AVX-512), oneDNN is switched off inside the region, so the LSTM runs on
    ATen's own kernels instead of failing with "could not create a primitive descriptor"."""
    if precision != "bf16":
        return contextlib.nullcontext()
    cast = torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if device.type != "cpu" or onednn_has_bf16_lstm():
        return cast
    stack = contextlib.ExitStack()
    stack.enter_context(_onednn_off())
    stack.enter_context(cast)
    return stack


@functools.cache
def onednn_has_bf16_lstm() -> bool:
    """Whether oneDNN runs an LSTM in bf16 on this CPU: tried once, on a tiny LSTM, per process."""
    if not torch.backends.mkldnn.is_available():
        return True  # no oneDNN: ATen's kernels run bf16 everywhere
    lstm = torch.nn.LSTM(2, 2, batch_first=True)
    try:
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            out, _ = lstm(torch.zeros(1, 1, 2))
        out.float().sum().backward()  # training needs the backward primitive too
    except RuntimeError:
        return False
    return True


@contextlib.contextmanager
def _onednn_off():
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False  # the flag alone: torch.backends.mkldnn.flags() also warns about TF32
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before
