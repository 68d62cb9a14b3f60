"""One-token steps of a batch of streams through the model: ``Stepper``, the math of nn.LSTM/GRU/RNN,
and ``Runner``, the same step in place on buffers allocated once (sampling's hot loop).

Calling the fused nn.LSTM for a single step costs ~3 ms on a CPU (it prepares its kernels on every
call); the same step as one matrix product per layer costs a fraction of that. The weights are
prepared once, when the Stepper is built: [W_ih, W_hh] stacked so that an LSTM or RNN layer is one
product of [x, h], multiplied by the kernel that is fastest on this machine for the shape and the
number of streams (``Product``, kernels.py). A full softmax head's product is prepared the same way
(fp32 always). An LSTM's g-gate columns are scaled by 2 so that one sigmoid covers all four gates
(tanh(x) = 2 sigmoid(2x) - 1; scaling by 2 is exact); tanh(c) is taken the same way where that is faster
(torch's vectorised CPU tanh costs several times its sigmoid on a batch; where ATen runs without
vector kernels torch.tanh wins: ``kernels.tanh_form`` times both once per machine and row count).

The cells of model/cells/ (QRNN, SRU, IndRNN, JANET, peephole LSTM) step through their own
``CellStack.step``, the same equations as their forward on (B, .) tensors, in fp32.
"""

from __future__ import annotations

import torch

from charrnn.generation import kernels
from charrnn.generation.kernels import Product
from charrnn.model.cells import CellStack
from charrnn.model import state as states
from charrnn.model.network import RNNLM


def lstm_update(gates, c: torch.Tensor, t: torch.Tensor, h: torch.Tensor, form: str = "sigmoid") -> torch.Tensor:
    """An LSTM cell from its gates, sigmoid of [i, f, 2 g, o] ((B, 4H), or its four (B, H) parts): the
    cell state c updated in place, the new hidden state written into h (t: scratch); tanh(c) taken
    in the ``form`` kernels.tanh_form chose. The same ops on every path, so the Stepper and the
    Runner agree to the bit; no Python-number operands (torch converts each into a tensor on every
    call)."""
    ig, fg, g2, og = gates.chunk(4, 1) if isinstance(gates, torch.Tensor) else gates
    c.mul_(fg).addcmul_(ig, g2, value=2).sub_(ig)        # f c + i tanh(g) = f c + 2 i sigmoid(2g) - i
    if form == "tanh":
        torch.tanh(c, out=t)
        return torch.mul(og, t, out=h)
    torch.add(c, c, out=t).sigmoid_()                     # tanh(c) = 2 sigmoid(2c) - 1
    torch.mul(og, t, out=h)
    return h.add_(h).sub_(og)


class Stepper:
    """One token per stream per step through the model, with the same math as nn.LSTM/GRU/RNN.

    The state is a tuple of per-layer (B, H) tensors (LSTM: hidden states then cell states); rows
    are independent streams. With ``--attention M`` one more entry, ``(memory,)``, holds the top
    layer's last M normalised states (B, M, H), and the attention (attention.py's ``step``) follows
    the stack. The weights are copied when the Stepper is built (build a new one after changing the
    model). ``precision="bf16"`` multiplies in bfloat16 (several times faster for big
    batches on CPUs with AVX512-BF16 or AMX); states, gates and the output layer stay fp32.
    """

    def __init__(self, model: RNNLM, precision: str = "fp32"):
        self.model, self.cell = model, model.cfg.cell
        self.attn = None if model.attn is None else model.attn.prepared()  # --attention: its step, weights copied
        rnn, self.layers = model.rnn, []
        self.stack = rnn if isinstance(rnn, CellStack) else None  # steps by its own step()
        self.dtype = torch.bfloat16 if precision == "bf16" else None  # bf16: products in bf16, the rest fp32
        self.forms: dict = {}
        self.forced_form: str | None = None  # one tanh(c) form whatever the timing (use_kernel: "sigmoid")
        with torch.no_grad():
            for i in range(0 if self.stack is not None else rnn.num_layers):
                w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{k}_l{i}") for k in ("weight_ih", "weight_hh", "bias_ih",
                                                                               "bias_hh"))
                if self.cell == "gru":  # the candidate gate needs W_hn h apart: two products
                    self.layers.append((Product(w_ih, b_ih, dtype=self.dtype), Product(w_hh, b_hh, dtype=self.dtype)))
                elif self.cell == "lstm":  # gates i, f, g, o; g's rows doubled: one sigmoid for all four
                    w, b = torch.cat([w_ih, w_hh], 1), b_ih + b_hh
                    H = w.shape[0] // 4
                    scale = torch.ones(4 * H, 1, dtype=w.dtype, device=w.device)
                    scale[2 * H:3 * H] = 2
                    self.layers.append((Product(w * scale, b * scale.view(-1), "sigmoid", self.dtype),))
                else:
                    self.layers.append((Product(torch.cat([w_ih, w_hh], 1), b_ih + b_hh, "tanh", self.dtype),))
            parts = model.head.linear_parts()  # a full softmax: its product prepared too (fp32 always)
            self.out = Product(*parts) if parts is not None else None

    def from_module(self, state, batch: int = 1):
        """nn.LSTM-style (L, 1, H) state -> this stepper's state with ``batch`` copies of it."""
        rnn, memory = states.parts(state, self.attn is not None)
        parts = rnn if isinstance(rnn, tuple) else (rnn,)
        out = tuple(t[:, :1].expand(-1, batch, -1).unbind(0) for t in parts)
        if self.attn is None:
            return out
        return out + ((memory[:, :1].transpose(0, 1).expand(batch, -1, -1).float(),),)  # (M, 1, H) -> (B, M, H)

    def to_module(self, state):
        """The first row of the state in nn.LSTM style (L, 1, H), to continue with a fused forward."""
        rnn = state[:-1] if self.attn is not None else state
        parts = tuple(torch.stack([s[:1] for s in layers]) for layers in rnn)
        parts = parts if len(parts) > 1 else parts[0]  # (h, c) of an LSTM or a peephole LSTM, else h
        return parts if self.attn is None else (parts, state[-1][0][:1].transpose(0, 1))

    @staticmethod
    def select(state, index: torch.Tensor):
        """The state of the given rows (drop finished streams, or follow beams to their parents)."""
        return tuple(tuple(s.index_select(0, index) for s in layers) for layers in state)

    @torch.no_grad()  # inference only (the products write into buffers)
    def __call__(self, tokens: torch.Tensor, state):
        """tokens (B,) -> next-token log-probabilities (B, V) and the new state."""
        x = self.model.embed.weight.index_select(0, tokens.view(-1))
        rnn = state[:-1] if self.attn is not None else state
        if self.stack is not None:
            x, per_layer = self.stack.step(x, [tuple(part[i] for part in rnn) for i in range(len(rnn[0]))])
            new = tuple(tuple(st[k] for st in per_layer) for k in range(self.stack.n_states))
        else:
            x, new = self._fused_cells(x, rnn)
        if self.attn is not None:  # the memory: the last entry of the state
            x, memory = self.attn.step(x, state[-1][0])
            new += ((memory,),)
        return self._log_probs(x), new

    def _fused_cells(self, x: torch.Tensor, state):
        """An LSTM/GRU/RNN step of every layer from the prepared products: the top h and the new state."""
        hs, new_h, new_c = state[0], [], []
        for i, layer in enumerate(self.layers):
            if self.cell == "gru":
                ir, iz, in_ = layer[0](x).chunk(3, 1)
                hr, hz, hn = layer[1](hs[i]).chunk(3, 1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                h = (1 - z) * torch.tanh(in_ + r * hn) + z * hs[i]
            elif self.cell == "lstm":
                c, h = state[1][i].clone(), torch.empty_like(hs[i])
                lstm_update(layer[0](torch.cat([x, hs[i]], 1)), c, torch.empty_like(c), h, self.form(c))
                new_c.append(c)
            else:
                h = layer[0](torch.cat([x, hs[i]], 1))
            new_h.append(h)
            x = h
        return x, ((tuple(new_h), tuple(new_c)) if self.cell == "lstm" else (tuple(new_h),))

    def _log_probs(self, x: torch.Tensor) -> torch.Tensor:
        if self.out is not None:
            return torch.log_softmax(self.out(x), dim=-1)
        return self.model.head.log_probs(x).float()

    def form(self, c: torch.Tensor) -> str:
        """How tanh(c) is taken for states shaped like c (kernels.tanh_form, remembered per row count)."""
        if self.forced_form is not None:
            return self.forced_form
        key = (kernels.bucket(c.shape[0]), c.device)
        if key not in self.forms:
            self.forms[key] = kernels.tanh_form(c.shape[1], c.shape[0], c.device)
        return self.forms[key]

    def products(self) -> list:
        return [p for layer in self.layers for p in layer] + ([self.out] if self.out is not None else [])

    def use_kernel(self, name: str | None) -> bool:
        """Multiply with this kernel whatever the timing (None: the fastest again), for tests and
        benchmarks; False (and nothing changed) where some product cannot run it here."""
        if name is not None and not all(p.works(name) for p in self.products()):
            return False
        for p in self.products():
            p.forced = name
        self.forced_form = None if name is None else "sigmoid"  # a forced kernel: the same ops at every row count
        return True


class Runner:
    """Steps B streams in place: every buffer is allocated when the Runner is made (or when the row
    count changes), every op of an LSTM step writes into one (``out=``, in-place ops; oneDNN's
    kernels, when they are the fastest, return a tensor of their own). Other cells run the Stepper's
    step. ``logp`` and ``state()`` are views of the buffers: valid until the next step.

    Layer i keeps [x_i, h_i] in one (B, E_i + H) buffer: its product reads it whole, the new h is
    written into its right part (the next step's h_i) and copied into the next layer's left part.
    """

    def __init__(self, stepper: Stepper, state):
        self.stepper = stepper
        self.fast = stepper.cell == "lstm" and type(stepper) is Stepper  # (a CUDA graph steps on its own buffers)
        self.memory = None  # --attention: the last M states (B, M, H), replaced by each step
        self.load(state)

    def _alloc(self, rows: int, device) -> None:
        s, H = self.stepper, self.stepper.model.cfg.hidden
        emb = s.model.embed.weight.shape[1]
        self.rows = rows
        self.xh = [torch.zeros(rows, (emb if i == 0 else H) + H, device=device) for i in range(len(s.layers))]
        self.h = [xh[:, xh.shape[1] - H:] for xh in self.xh]
        self.c = [torch.zeros(rows, H, device=device) for _ in s.layers]
        self.gates = [torch.empty(rows, 4 * H, device=device) for _ in s.layers]
        self.parts = [g.chunk(4, 1) for g in self.gates]  # views made once
        self.tmp = torch.empty(rows, H, device=device)
        self.embed = s.model.embed.weight.detach()
        self.x0 = self.xh[0][:, :emb]                                   # where the embeddings go
        self.inputs = [xh[:, :H] for xh in self.xh[1:]] + [None]        # where each layer's h goes next
        V = s.model.cfg.vocab_size
        self.logits = torch.empty(rows, V, device=device) if s.out is not None else None
        self.logp = torch.empty(rows, V, device=device)
        kernels.choose_together(s.products(), rows)  # the fastest whole step at this row count (cached)
        self.form = s.form(self.c[0])

    def load(self, state) -> None:
        """Take a Stepper-style state (copied into the buffers)."""
        if not self.fast:
            self.state_ = state
            return
        rows = state[0][0].shape[0]
        if getattr(self, "rows", None) != rows:
            self._alloc(rows, state[0][0].device)
        for mine, given in zip(self.h + self.c, list(state[0]) + list(state[1])):
            mine.copy_(given)
        if self.stepper.attn is not None:
            self.memory = state[-1][0]

    def state(self):
        if not self.fast:
            return self.state_
        rnn = (tuple(self.h), tuple(self.c))
        return rnn if self.memory is None else rnn + ((self.memory,),)

    def select(self, index: torch.Tensor) -> None:
        """Keep the given rows (finished streams dropped)."""
        self.load(Stepper.select(self.state(), index))

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B,) -> next-token log-probabilities (B, V), the state advanced in place (nothing
        here needs a gradient: the weights are detached copies, so no no_grad context per step)."""
        s = self.stepper
        if not self.fast:
            logp, self.state_ = s(tokens, self.state_)
            return logp
        torch.index_select(self.embed, 0, tokens, out=self.x0)
        for xh, p, gates, parts, c, h, nxt in zip(self.xh, s.layers, self.gates, self.parts, self.c, self.h, self.inputs):
            g = p[0].into(xh, gates)
            lstm_update(parts if g is gates else g, c, self.tmp, h, self.form)
            if nxt is not None:
                nxt.copy_(h)
        x = self.h[-1]
        if s.attn is not None:  # the attention's step (new tensors; its weights are copies: no gradient)
            x, self.memory = s.attn.step(x, self.memory)
        if s.out is not None:
            return torch.log_softmax(s.out.into(x, self.logits), -1, out=self.logp)
        with torch.no_grad():
            return self.logp.copy_(s.model.head.log_probs(x))
