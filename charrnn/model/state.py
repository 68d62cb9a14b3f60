"""The carried state of a model as a nested tuple of tensors, and the helpers every consumer uses on it.

A model's state (``RNNLM.features``) is what ``nn.LSTM/GRU/RNN`` return — an LSTM's ``(h, c)``, or
one tensor ``h`` — each (layers, B, H); with ``--attention M`` it is ``(rnn_state, memory)``, the
memory (M, B, H) the top layer's last M hidden states, layer-normed (attention.py). Every leaf has
the batch (the streams) on dim 1, so splitting, joining, zeroing and detaching need no knowledge of
the structure. ``None`` is the zero state throughout. For a checkpoint the leaves are kept as a flat
list (``flatten``) and rebuilt from the model's config (``unflatten``), so a model without attention
stores exactly what it stored before.
"""

from __future__ import annotations

from charrnn.model.cells import STACKS

BATCH_DIM = 1  # of every leaf in the module form


def map_state(fn, state):
    """``fn`` applied to every tensor of the state, the structure kept (None stays None)."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return tuple(map_state(fn, s) for s in state)
    return fn(state)


def detach(state):
    """The state cut from the graph (between TBPTT windows)."""
    return map_state(lambda t: t.detach(), state)


def select(state, index):
    """The state of the given streams (rows of dim 1)."""
    return map_state(lambda t: t.index_select(BATCH_DIM, index), state)


def split(state, bounds):
    """The state cut along the streams into the parts [a, b) of ``bounds``."""
    if state is None:
        return [None] * len(bounds)
    return [map_state(lambda t, a=a, b=b: t[:, a:b], state) for a, b in bounds]


def cat(states):
    """The parts of ``split`` joined back."""
    import torch  # here: this module is imported by light code too

    first = states[0]
    if first is None:
        return None
    if isinstance(first, (tuple, list)):
        return tuple(cat([s[i] for s in states]) for i in range(len(first)))
    return torch.cat(states, BATCH_DIM)


def flatten(state) -> list | None:
    """The leaves in order (the form a checkpoint keeps)."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return [leaf for s in state for leaf in flatten(s)]
    return [state]


def unflatten(leaves, cell: str, attention: int = 0):
    """``flatten``'s list back as the state of a model with this cell and attention span."""
    if leaves is None:
        return None
    leaves = list(leaves)
    n = 2 if cell == "lstm" else getattr(STACKS.get(cell), "n_states", 1)  # (h, c) of an LSTM or a peephole LSTM
    rnn = tuple(leaves[:n]) if n > 1 else leaves[0]
    if attention:
        return rnn, leaves[-1]
    return rnn


def parts(state, attention: int):
    """(rnn_state, memory) of a model's state; the memory None without attention or without a state."""
    if not attention:
        return state, None
    return (None, None) if state is None else state
