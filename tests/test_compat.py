"""Private PyTorch APIs answer through system/compat.py, and each falls back when it is missing or fails."""

from __future__ import annotations

import torch

from charrnn.system import compat


def test_cpu_flags_that_fail_or_are_missing_mean_no(monkeypatch):
    def broken():
        raise RuntimeError("not on this build")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert compat.cpu_has_amx() is False and compat.cpu_has_bf16_dot() is False


def test_fused_adamw_devices_fall_back_to_cuda_only(monkeypatch):
    import torch.utils._foreach_utils as fu

    monkeypatch.delattr(fu, "_get_fused_kernels_supported_devices")
    assert compat.fused_adamw_devices() == ("cuda",)


def test_foreach_updates_equal_their_loops(monkeypatch):
    a, b = [torch.arange(4.0), torch.ones(3)], [torch.zeros(4), torch.full((3,), 3.0)]
    fast = [t.clone() for t in a]
    compat.foreach_lerp_(fast, b, 0.25)
    monkeypatch.delattr(torch, "_foreach_lerp_")
    monkeypatch.delattr(torch, "_foreach_copy_")
    slow = [t.clone() for t in a]
    compat.foreach_lerp_(slow, b, 0.25)
    for x, y in zip(fast, slow):
        assert torch.equal(x, y)  # the same elementwise lerp, one tensor at a time
    compat.foreach_copy_(slow, b)
    assert all(torch.equal(x, y) for x, y in zip(slow, b))


def test_no_other_module_calls_a_private_torch_api():
    """Only compat.py names torch._C, torch.ops.mkldnn, torch.cpu._is_*, _foreach_* or _foreach_utils."""
    import pathlib
    import re

    root = pathlib.Path(compat.__file__).resolve().parents[1]
    private = re.compile(r"torch\._C\b|torch\.ops\.mkldnn|torch\.cpu\._is_|torch\._foreach_|_foreach_utils")
    found = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if p.name != "compat.py" and private.search(p.read_text(encoding="utf-8"))]
    assert found == []
