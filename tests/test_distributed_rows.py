"""rank_rows: a rank's rows of the streams and of a saved training state (re-sliced on another world size)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charrnn.data.batching import StreamBatcher
from charrnn.errors import CharrnnError
from charrnn.training.distributed import RankRows, reslice


def test_rank_rows_are_the_one_process_rows():
    full = StreamBatcher(np.arange(5000) % 97, 8, 16, seed=3)
    parts = [RankRows(StreamBatcher(np.arange(5000) % 97, 8, 16, seed=3), 4 * r, 4 * r + 4) for r in range(2)]
    for epoch in (0, 1, 2):
        whole = full.epoch_streams(epoch)
        for k in (0, 5, full.windows_per_epoch - 1):
            x, y = full.window(whole, k)
            got = [p.window(p.epoch_streams(epoch), k) for p in parts]
            assert torch.equal(torch.cat([g[0] for g in got]), x) and torch.equal(torch.cat([g[1] for g in got]), y)
    assert parts[1].windows_per_epoch == full.windows_per_epoch and parts[1].B == 4


def test_reslice_takes_this_ranks_rows_and_rng():
    h = torch.arange(2 * 6 * 3, dtype=torch.float32).view(2, 6, 3)
    ts = {"hidden": [h, -h], "world_size": 3, "rng": "r0", "rank_rng": ["r0", "r1", "r2"]}
    lines = []
    part = reslice(ts, 3, 2, lines.append)
    assert torch.equal(part["hidden"][0], h[:, 4:6]) and torch.equal(part["hidden"][1], -h[:, 4:6])
    assert part["rng"] == "r2" and lines == [] and ts["hidden"][0] is h  # the saved dict is left alone
    part = reslice(ts, 2, 1, lines.append)  # 3 processes' run on 2: rows 3..5, rank 1's RNG, said once
    assert torch.equal(part["hidden"][0], h[:, 3:6]) and part["rng"] == "r1" and "no longer bit-exact" in lines[0]
    assert reslice(ts, 1, 0, None)["hidden"][0] is h  # one process: all the rows
    with pytest.raises(CharrnnError, match="incomplete"):
        reslice({"hidden": ["not a tensor"]}, 2, 0, None)
