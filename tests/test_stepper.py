"""The one-token sampling step computes exactly what the fused nn.LSTM/GRU/RNN computes."""

from __future__ import annotations

import pytest
import torch

from charrnn.model import ModelConfig, RNNLM, resolve_head
from charrnn.sample import Stepper


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("head", ["full", "adaptive"])
def test_step_by_step_equals_fused_forward(cell, head):
    torch.manual_seed(0)
    V = 1200
    m = RNNLM(ModelConfig(V, cell, 2, 24, 8, 0.0, False, *resolve_head(head, V, False))).eval()
    if head == "adaptive":
        m.init_output_bias(torch.randint(0, 50, (V,)).numpy())
    ids = torch.randint(0, V, (1, 12))
    with torch.no_grad():
        want, _ = m(ids)
        _, state = m(ids[:, :4])
        step = Stepper(m)
        state = step.split_state(state)
        got = [step(int(t), state) for t in ids[0, 4:]]
    for k, g in enumerate(got):
        torch.testing.assert_close(torch.log_softmax(g, -1), torch.log_softmax(want[0, 4 + k], -1),
                                   atol=1e-5, rtol=1e-5)
