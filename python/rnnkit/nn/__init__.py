"""Modules with parameters and explicit backward, all on one base (:class:`Module`).

* :mod:`.module`: :class:`Parameter` and :class:`Module`, the base of every module of rnnkit.
* :mod:`.recurrent`: :class:`RNN`, :class:`LSTM`, :class:`GRU` (torch.nn's interface, whole
  sequences and one step at a time).
* :mod:`.cells`: :class:`RNNCell`, :class:`LSTMCell`, :class:`GRUCell` (torch.nn's cells: one
  step, explicit backward).
* :mod:`.layers`: :class:`Linear`, :class:`Embedding`, :class:`Dropout`.
* :mod:`.losses`: :class:`CrossEntropyLoss`, :class:`MSELoss`.
* :mod:`.attention`: :class:`AdditiveAttention`, :class:`DotAttention`,
  :class:`GeneralAttention`.

nn builds on :mod:`rnnkit.ops` and never imports :mod:`rnnkit.models` or :mod:`rnnkit.train`.
"""

from .attention import (
    AdditiveAttention,
    AttentionMemory,
    DotAttention,
    GeneralAttention,
    MemoryGrads,
    make_attention,
)
from .cells import GRUCell, LSTMCell, RNNCell
from .layers import Dropout, Embedding, Linear
from .losses import CrossEntropyLoss, MSELoss
from .module import Module, Parameter
from .recurrent import GRU, LSTM, RNN, Stream, module_class

__all__ = [
    "Parameter",
    "Module",
    "RNN",
    "LSTM",
    "GRU",
    "Stream",
    "module_class",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "Linear",
    "Embedding",
    "Dropout",
    "CrossEntropyLoss",
    "MSELoss",
    "AdditiveAttention",
    "DotAttention",
    "GeneralAttention",
    "AttentionMemory",
    "MemoryGrads",
    "make_attention",
]
