"""Generation: feed the prime once, then one token per step with the hidden state kept.

The library half: ``Model.sample``/``Model.stream`` (api.py) call ``generate``; the CLI prints.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from charrnn.errors import CharrnnError
from charrnn.model import RNNLM
from charrnn.settings import SAMPLE, check_values


def check_sample_args(length: int, temperature: float, top_k: int = 0) -> None:
    check_values(SAMPLE, {"length": length, "temp": temperature, "top_k": top_k}, "sampling option")


def start_ids(tokenizer, prime: str, skip_unknown: bool = False) -> np.ndarray:
    """Token ids of the prime text; without one, a newline (or the first token) starts the text."""
    if prime:
        ids = tokenizer.encode(prime, skip_unknown=skip_unknown, hint="pass --skip-unknown to drop them")
        if len(ids):
            return ids
        raise CharrnnError("--prime has no character the model knows; give another prime text")
    try:
        ids = tokenizer.encode("\n")
    except CharrnnError:
        ids = np.zeros(0, np.int32)
    return ids[:1] if len(ids) else np.zeros(1, np.int32)


class Stepper:
    """One token at a time through the model, with the same math as nn.LSTM/GRU/RNN.

    Calling the fused nn.LSTM for a single step costs ~3 ms on a CPU (it prepares its kernels on
    every call); the same step as a few matrix-vector products costs ~0.5 ms. Sampling is
    sequential by nature, so this is the one place that walks time step by step.
    """

    def __init__(self, model: RNNLM):
        self.model, self.cell = model, model.cfg.cell
        rnn = model.rnn
        self.layers = [(getattr(rnn, f"weight_ih_l{i}"), getattr(rnn, f"weight_hh_l{i}"),
                        getattr(rnn, f"bias_ih_l{i}"), getattr(rnn, f"bias_hh_l{i}")) for i in range(rnn.num_layers)]

    def split_state(self, state):
        """nn.LSTM-style (L, 1, H) state -> per-layer lists of (1, H)."""
        if self.cell == "lstm":
            return [list(state[0].unbind(0)), list(state[1].unbind(0))]
        return [list(state.unbind(0))]

    def __call__(self, token: int, state):
        x = self.model.embed.weight[token].view(1, -1)
        hs = state[0]
        for i, (w_ih, w_hh, b_ih, b_hh) in enumerate(self.layers):
            gi = torch.addmm(b_ih, x, w_ih.t())
            gh = torch.addmm(b_hh, hs[i], w_hh.t())
            if self.cell == "lstm":
                ig, fg, gg, og = (gi + gh).chunk(4, 1)
                c = torch.sigmoid(fg) * state[1][i] + torch.sigmoid(ig) * torch.tanh(gg)
                h = torch.sigmoid(og) * torch.tanh(c)
                state[1][i] = c
            elif self.cell == "gru":
                ir, iz, in_ = gi.chunk(3, 1)
                hr, hz, hn = gh.chunk(3, 1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                h = (1 - z) * torch.tanh(in_ + r * hn) + z * hs[i]
            else:
                h = torch.tanh(gi + gh)
            hs[i] = x = h
        return self.model.head.log_probs(x)[0]


@torch.no_grad()
def generate(model: RNNLM, tokenizer, length: int, temperature: float = 1.0, prime: str = "",
             top_k: int = 0, seed: int | None = None, device: torch.device | str = "cpu",
             skip_unknown: bool = False) -> Iterator[str]:
    """Yield decoded text as soon as it is complete: first the prime, then ``length`` new tokens.

    temperature 0 is greedy (argmax); top_k > 0 samples among the k most likely tokens only.
    """
    check_sample_args(length, temperature, top_k)
    device = torch.device(device)
    gen = torch.Generator(device=device)
    if seed is not None:
        gen.manual_seed(seed)
    else:
        gen.seed()  # non-deterministic, and leaves torch's global RNG alone
    model.eval()
    ids = start_ids(tokenizer, prime, skip_unknown)
    if prime:
        yield tokenizer.decode(ids)
    logits, state = model(torch.as_tensor(ids, dtype=torch.long, device=device).view(1, -1))
    logits = logits[0, -1].float()
    step = Stepper(model)
    state = step.split_state(state)
    decoder = tokenizer.stream_decoder()
    for _ in range(length):
        if temperature == 0:
            nxt = int(torch.argmax(logits))
        else:
            scaled = (logits - logits.max()) / temperature
            if 0 < top_k < scaled.numel():
                kth = torch.topk(scaled, top_k).values[-1]
                scaled = scaled.masked_fill(scaled < kth, -float("inf"))
            probs = torch.softmax(scaled, dim=-1)
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        text = decoder.feed(nxt)
        if text:
            yield text
        logits = step(nxt, state).float()
    tail = decoder.flush()
    if tail:
        yield tail
