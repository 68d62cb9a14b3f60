"""One-token sampling steps replayed from a CUDA graph (issue #13).

A step of a small batch launches ~30 tiny kernels; on a GPU their launch overhead, not the
arithmetic, sets the speed. ``GraphStepper`` is a ``Stepper`` whose step runs on static buffers
(tokens, state, log-probabilities of a fixed number of rows): on CUDA the step over those buffers
is warmed up on a side stream, captured once into a ``torch.cuda.CUDAGraph`` and then replayed,
one launch per token. Fewer live rows than the buffers hold (finished streams dropped) use the first
rows; the rest are computed and ignored (rows are independent). More rows (beam search widening)
capture again at the larger size. Choosing the next token (temperature, top-k/p, multinomial) stays
outside the graph. Where capture is not possible (CPU, MPS, a failed capture) the same static-buffer
step runs eagerly, so its logic is tested on the CPU; ``make_stepper`` only picks it on CUDA.
"""

from __future__ import annotations

import torch

from charrnn.generation.stepper import Stepper
from charrnn.model.network import RNNLM

WARMUP = 3  # eager runs on a side stream before capture (lets cuBLAS and the allocator settle)


def wants_graph(device) -> bool:
    """Graphs on CUDA devices only (MPS and the CPU have no graph capture)."""
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def make_stepper(model: RNNLM, precision: str, device) -> Stepper:
    """The stepper for sampling on ``device``: graph-replayed on CUDA, the plain one elsewhere. The
    plain one is kept on the model while its weights stay the same (preparing them costs ~15 ms,
    a sizeable part of a short sample)."""
    if wants_graph(device):
        return GraphStepper(model, precision)
    weights = tuple((p.data_ptr(), p._version, p.device) for p in model.parameters())
    cache = model.__dict__.setdefault("_charrnn_steppers", {})
    hit = cache.get(precision)
    if hit is None or hit[0] != weights:
        hit = cache[precision] = (weights, Stepper(model, precision))
    return hit[1]


class GraphStepper(Stepper):
    """A Stepper whose steps run on static buffers, replayed from a CUDA graph when ``graph`` is true
    (default: on CUDA); results are views of the buffers, valid until the next step."""

    def __init__(self, model: RNNLM, precision: str = "fp32", graph: bool | None = None):
        super().__init__(model, precision)
        self.want_graph = wants_graph(model.embed.weight.device) if graph is None else graph
        self.rows = 0                 # rows the static buffers hold
        self.tokens = self.state = self.logp = None
        self.graph = None             # the captured step, or None: eager on the buffers
        self.failed = None            # why capture failed (then eager from here on)

    def _flat(self, state) -> list:
        return [s for layers in state for s in layers]

    def _body(self) -> None:
        """One step from the static buffers into them (what the graph holds)."""
        logp, new = Stepper.__call__(self, self.tokens, self.state)
        self.logp.copy_(logp)
        for s, n in zip(self._flat(self.state), self._flat(new)):  # after every layer has read the old state
            s.copy_(n)

    def _build(self, rows: int, like_tokens: torch.Tensor, like_state) -> None:
        dev = like_tokens.device
        self.rows, self.graph = rows, None
        self.tokens = torch.zeros(rows, dtype=torch.long, device=dev)
        self.state = tuple(tuple(torch.zeros(rows, *s.shape[1:], dtype=s.dtype, device=dev) for s in layers)
                           for layers in like_state)
        self.logp = torch.zeros(rows, self.model.cfg.vocab_size, device=dev)
        if self.want_graph and self.failed is None:
            self.graph = self._capture()

    def _capture(self):
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP):  # changes the buffers; the real inputs are copied in afterwards
                    self._body()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._body()
            return graph
        except Exception as e:  # noqa: BLE001 - any failure to capture means: run the same step eagerly
            self.failed = f"{type(e).__name__}: {e}"
            return None

    def __call__(self, tokens: torch.Tensor, state):
        b = tokens.shape[0]
        if b > self.rows:
            self._build(b, tokens, state)
        self.tokens[:b].copy_(tokens)  # rows b.. keep earlier tokens: computed, never read
        for mine, given in zip(self._flat(self.state), self._flat(state)):
            if given.data_ptr() != mine.data_ptr() or given.stride() != mine.stride():  # not our own last output
                mine[:b].copy_(given)
        if self.graph is not None:
            self.graph.replay()
        else:
            self._body()
        return self.logp[:b], tuple(tuple(s[:b] for s in layers) for layers in self.state)
