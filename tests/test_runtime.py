"""Device, precision and progress-bar choices."""

from __future__ import annotations

import pytest
import torch

from charrnn.system import device as runtime
from charrnn.errors import CharrnnError


def test_auto_device_is_cuda_only_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "mps_available", lambda: False)
    assert runtime.resolve_device("auto").type == "cpu"
    with pytest.raises(CharrnnError, match="no CUDA GPU is available"):
        runtime.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("cuda,mps,want", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_device_prefers_cuda_then_apples_mps_then_the_cpu(monkeypatch, cuda, mps, want):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(runtime, "mps_available", lambda: mps)
    assert runtime.resolve_device("auto").type == want


def test_mps_asked_for_where_there_is_none_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(runtime, "mps_available", lambda: False)
    with pytest.raises(CharrnnError, match=r"^--device mps was asked for, but Apple's MPS is not available .*; "
                                           "use --device cpu or auto$"):
        runtime.resolve_device("mps")
    assert runtime.mps_available() in (True, False)


@pytest.mark.parametrize("amx,want", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_bf16_only_on_cpus_with_amx(monkeypatch, amx, want):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: amx)
    assert runtime.resolve_precision("auto", torch.device("cpu")) == want
    assert runtime.resolve_precision("auto", torch.device("cuda")) == "fp32"  # TF32 matmuls instead
    assert runtime.resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_progress_is_shown_on_a_terminal_or_in_a_notebook_unless_told(monkeypatch):
    monkeypatch.setattr(runtime, "stderr_is_terminal", lambda: False)
    monkeypatch.setattr(runtime, "in_notebook", lambda: False)
    assert runtime.show_progress(None) is False and runtime.show_progress(True) is True
    monkeypatch.setattr(runtime, "in_notebook", lambda: True)
    assert runtime.show_progress(None) is True and runtime.show_progress(False) is False


def test_not_a_notebook_here():
    assert runtime.in_notebook() is False
    bar = runtime.progress_bar(total=3, disable=True)
    bar.update(3)
    bar.close()


@pytest.mark.parametrize("hardware", [True, False])
def test_sampling_is_fp32_unless_bf16_is_asked_and_the_cpu_multiplies_it(monkeypatch, capsys, hardware):
    """One rule (device.resolve_precision): sampling's default and auto are fp32 on every CPU (a seed gives
    the same text everywhere); bf16 only when asked, and on a CPU without bf16 hardware one line says so."""
    monkeypatch.setattr(runtime, "cpu_multiplies_bf16", lambda: hardware)
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: hardware)
    monkeypatch.setattr(runtime, "_said", set())
    cpu = torch.device("cpu")
    assert runtime.resolve_precision("auto", cpu, sampling=True) == "fp32"
    assert runtime.resolve_precision("fp32", cpu, sampling=True) == "fp32"
    assert runtime.resolve_precision("bf16", cpu, sampling=True) == ("bf16" if hardware else "fp32")
    runtime.resolve_precision("bf16", cpu, sampling=True)  # said once per process, not per sample
    said = capsys.readouterr().err.splitlines()
    assert said == ([] if hardware else ["--precision bf16: this CPU does not multiply bf16 in hardware (no "
                                         "AVX512-BF16 or AMX); sampling in fp32"])
    assert runtime.resolve_precision("bf16", torch.device("cuda"), sampling=True) == "bf16"
