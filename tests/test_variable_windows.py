"""--variable-len: drawn window lengths, exact contiguous positions, and bit-exact resume with every
regularisation flag on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charrnn.data.batching import StreamBatcher
from charrnn.model.checkpoint import load_checkpoint
from charrnn.data.batching import VariableBatcher, window_lengths
from tests.conftest import TINY_TEXT

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lengths_are_drawn_around_seq_len_deterministically_per_seed_and_epoch():
    T = 70
    a = window_lengths(3, 0, 5000, T, 10**9)
    assert np.array_equal(a, window_lengths(3, 0, 5000, T, 10**9))
    assert not np.array_equal(a, window_lengths(3, 1, 5000, T, 10**9))
    assert not np.array_equal(a, window_lengths(4, 0, 5000, T, 10**9))
    assert a.min() >= T // 4 and a.max() <= T + T // 5
    short = (a < 0.75 * T).mean()
    assert 0.03 < short < 0.08  # about 5% of the windows are drawn around T / 2
    assert abs(np.median(a) - T) <= 1 and len(np.unique(a)) > 10
    squeezed = window_lengths(3, 0, 100, T, 50 * T)  # would overrun: scaled down to fit
    assert squeezed.sum() <= 50 * T and squeezed.min() >= 1


def test_windows_tile_the_streams_contiguously_with_shifted_targets():
    ids = np.arange(20_000) % 977
    b = VariableBatcher(ids, 4, 32, seed=5)
    assert b.windows_per_epoch == StreamBatcher(ids, 4, 32, seed=5).windows_per_epoch
    for epoch in (0, 1):
        offset = b.epoch_streams(epoch)
        streams = torch.from_numpy(ids[offset:offset + 4 * b.stream_len].reshape(4, b.stream_len))
        xs, ys = zip(*(b.window(offset, k) for k in range(b.windows_per_epoch)))
        lengths = [x.shape[1] for x in xs]
        assert len(set(lengths)) > 3
        x, y = torch.cat(xs, 1), torch.cat(ys, 1)
        n = x.shape[1]
        assert n + 1 <= b.stream_len
        assert torch.equal(x, streams[:, :n]) and torch.equal(y, streams[:, 1:n + 1])
    assert not np.array_equal(b.plan(0)[1], b.plan(1)[1])


def _hash(ckpt) -> dict:
    return {**ckpt["model"], **{"ema." + k: v for k, v in ckpt["train_state"]["ema"]["weights"].items()}}


@pytest.mark.slow
@pytest.mark.numerics
def test_resume_is_bit_exact_with_every_new_flag_on(cli, tmp_path):
    corpus = tmp_path / "t.txt"
    corpus.write_text(TINY_TEXT[:1800], encoding="utf-8")  # about 25 windows per epoch
    flags = ["--layers", 2, "--hidden", 24, "--emb", 8, "--batch-size", 4, "--seq-len", 16, "--precision", "fp32",
             "--device", "cpu", "--eval-every", 10, "--save-every", 7, "--log-every", 5, "--seed", 11,
             "--min-lr-frac", 1, "--dropout", 0.2, "--locked-dropout", "--weight-drop", 0.3,
             "--embed-dropout", 0.1, "--ema", 0.9, "--variable-len"]  # constant LR: --max-steps may change
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--name", "whole", "--max-steps", 60, *flags)
    assert r.code == 0, r.err
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--name", "parts", "--max-steps", 23, *flags)
    assert r.code == 0, r.err
    for stop in (41, 60):
        r = cli("train", "--resume", tmp_path / "parts", "--checkpoint-dir", tmp_path, "--max-steps", stop)
        assert r.code == 0, r.err
    whole, parts = (load_checkpoint(str(tmp_path / n / "last.pt")) for n in ("whole", "parts"))
    assert whole["train_state"]["step"] == parts["train_state"]["step"] == 60
    assert whole["train_state"]["epoch"] >= 1  # an epoch boundary was crossed (a new window plan)
    a, b = _hash(whole), _hash(parts)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = whole["optimizer"]["state"], parts["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
