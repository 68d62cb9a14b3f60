"""Recurrent cells beyond PyTorch's fused nn.LSTM/GRU/RNN: QRNN, SRU, IndRNN (elementwise recurrences,
elementwise.py; QRNN and SRU by the parallel scan of scan.py), JANET and the peephole LSTM (a
recurrent product per step, recurrent.py). Each is a ``CellStack`` (stack.py) with nn.LSTM's interface.
"""

from __future__ import annotations

from charrnn.model.cells.elementwise import QRNN, SRU, IndRNN
from charrnn.model.cells.recurrent import JANET, PeepholeLSTM
from charrnn.model.cells.stack import CellStack

STACKS = {"qrnn": QRNN, "sru": SRU, "indrnn": IndRNN, "janet": JANET, "lstm-peephole": PeepholeLSTM}

__all__ = ["STACKS", "CellStack", "QRNN", "SRU", "IndRNN", "JANET", "PeepholeLSTM"]
