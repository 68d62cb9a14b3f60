"""Device, precision and progress-bar choices."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from charrnn.system import device as runtime
from charrnn.system import progress
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
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: False)
    monkeypatch.setattr(progress, "in_notebook", lambda: False)
    assert progress.show_progress(None) is False and progress.show_progress(True) is True
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    assert progress.show_progress(None) is True and progress.show_progress(False) is False


def test_not_a_notebook_here():
    assert progress.in_notebook() is False
    bar = progress.progress_bar(total=3, disable=True)
    bar.update(3)
    bar.close()


def _shell(name: str):
    """A stand-in IPython module whose get_ipython() returns a shell of class NAME."""
    return SimpleNamespace(get_ipython=lambda: type(name, (), {})())


@pytest.mark.parametrize("shell,want", [("ZMQInteractiveShell", True), ("TerminalInteractiveShell", False)])
def test_a_notebook_is_a_jupyter_kernel_not_a_terminal_ipython(monkeypatch, shell, want):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setitem(sys.modules, "IPython", _shell(shell))
    assert progress.in_notebook() is want
    monkeypatch.setitem(sys.modules, "google.colab", SimpleNamespace())
    assert progress.in_notebook() is True  # Colab's kernel, whatever its shell class


@pytest.mark.slow
def test_in_a_notebook_the_bar_is_tqdms_notebook_widget(monkeypatch):
    pytest.importorskip("ipywidgets", reason="the notebook widget needs ipywidgets (pip install 'charrnn[notebook]')")
    from tqdm.notebook import tqdm as notebook_tqdm
    from tqdm.std import tqdm as text_tqdm

    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    bar = progress.progress_bar(total=3, disable=False)
    assert isinstance(bar, notebook_tqdm)
    bar.close()
    bar = progress.progress_bar(total=3, disable=True)  # a disabled bar draws nothing: the text class will do
    assert type(bar) is text_tqdm
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # a notebook without ipywidgets: tqdm.notebook would fail
    bar = progress.progress_bar(total=3, disable=False)
    assert type(bar) is text_tqdm
    bar.close()
    monkeypatch.setattr(progress, "in_notebook", lambda: False)
    bar = progress.progress_bar(total=3, disable=False)
    assert type(bar) is text_tqdm
    bar.close()


def test_tf32_matmuls_are_switched_on_for_cuda_only(monkeypatch):
    """--precision auto on CUDA is fp32 with TF32 matmuls (resolve_precision's promise): setup_backend
    turns TF32 on for CUDA's matmuls and cuDNN's RNNs, and leaves it alone for the CPU."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    runtime.setup_backend(torch.device("cpu"))
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
    runtime.setup_backend(torch.device("cuda"))
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)


@pytest.mark.numerics
def test_bf16_autocast_trains_an_lstm_on_every_cpu():
    """bf16 autocast around the fused LSTM, forward and backward, whether or not this CPU's oneDNN has a
    bf16 LSTM (AVX2-only CPUs have none: the region then runs on ATen's kernels)."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True)
    x = torch.randn(3, 5, 8)
    before = torch.backends.mkldnn.enabled
    with runtime.autocast(torch.device("cpu"), "bf16"):
        out, _ = lstm(x)
    out.float().pow(2).mean().backward()
    assert torch.backends.mkldnn.enabled == before
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lstm.parameters())
    ref, _ = lstm(x)
    # bf16 rounds inputs, weights and the gate matmuls' products to 8 significant bits (relative 2^-8);
    # through two layers of |tanh| <= 1 outputs, the error stays a few 2^-8: 8 * 2^-8 = 0.03 bounds it.
    assert (out.float() - ref).abs().max().item() <= 8 * 2.0 ** -8


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
