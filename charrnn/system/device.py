"""Device and numeric-precision choices shared by training, evaluation and sampling."""

from __future__ import annotations

import contextlib
import functools

import torch

from charrnn.errors import CharrnnError
from charrnn.settings import DEVICES, PRECISIONS


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
    """True where the CPU multiplies bf16 in hardware (AMX), which makes bf16 autocast ~3x faster."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except Exception:  # noqa: BLE001 - private API; absent means "don't know"
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: fp32 with TF32 matmuls on CUDA (faster than bf16 autocast at typical batch sizes),
    bf16 autocast on CPUs with AMX, plain fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise CharrnnError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


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
