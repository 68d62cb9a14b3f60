"""Generation: feed the prime once, then one token per step with the hidden state kept."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from charrnn.errors import CharrnnError
from charrnn.model import RNNLM


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


@torch.no_grad()
def generate(model: RNNLM, tokenizer, length: int, temperature: float = 1.0, prime: str = "",
             top_k: int = 0, seed: int | None = None, device: torch.device | str = "cpu",
             skip_unknown: bool = False) -> Iterator[str]:
    """Yield decoded text as soon as it is complete: first the prime, then ``length`` new tokens.

    temperature 0 is greedy (argmax); top_k > 0 samples among the k most likely tokens only.
    """
    if length < 0:
        raise CharrnnError(f"--length must not be negative (got {length})")
    if not temperature >= 0:
        raise CharrnnError(f"--temp must be 0 (greedy) or positive (got {temperature})")
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
        logits, state = model(torch.tensor([[nxt]], device=device), state)
        logits = logits[0, -1].float()
    tail = decoder.flush()
    if tail:
        yield tail
