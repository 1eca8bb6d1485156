"""Sequence models: an rnnkit.nn recurrent module plus a Linear head.

:class:`SequenceRegressor` / :class:`SequenceClassifier`, many-to-one (from each sequence's
last state) or many-to-many. Shape letters: T time steps, B batch, I input size, H hidden size,
L layers, O outputs, C classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .. import _validate as v
from ..nn import CrossEntropyLoss, Linear, Module, MSELoss, module_class
from .autoregressive import seeds

__all__ = ["SequenceRegressor", "SequenceClassifier"]


class SequenceRegressor(Module):
    """An rnnkit.nn recurrent module plus a Linear head.

    ``y = model(x (T, B, I), state=None, lengths=None)``: many-to-one (default) gives
    y (B, O) from each sequence's last state of the top layer; ``many_to_many=True`` gives
    y (T, B, O) from every step. ``dx = model.backward(dy)``. After a forward,
    ``model.final_state`` is the rnn's final state (h_n (L, B, H), or (h_n, c_n) for the
    LSTM), to be passed as ``state`` to the next chunk (truncated BPTT).

    cell: "rnn", "lstm" or "gru"; ``forget_bias`` is added to the LSTM's forget-gate bias
    (GRU: the update-gate z bias, which keeps the state) at initialisation: a positive value
    makes the cell remember by default. Children: ``rnn``, ``head``.
    """

    default_loss: type[MSELoss] | type[CrossEntropyLoss] = MSELoss  # the loss fit uses by default

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        output_size: int = 1,
        *,
        num_layers: int = 1,
        many_to_many: bool = False,
        forget_bias: float = 0.0,
        nonlinearity: str = "tanh",
        dtype: npt.DTypeLike = np.float32,
        seed: int | None = None,
    ) -> None:
        cls = module_class(cell)
        spec = cls.CELL
        self.cell = spec.name
        self.many_to_many = v.flag("many_to_many", many_to_many)
        self.dtype = v.dtype_arg(dtype)
        self.output_size = v.int_arg("output_size", output_size)
        s = seeds(seed, 2)
        kw: dict[str, Any] = {"nonlinearity": nonlinearity} if "nonlinearity" in spec.options else {}
        self.rnn = cls(input_size, hidden_size, num_layers, dtype=self.dtype, seed=s[0], **kw)
        self.hidden_size = self.rnn.hidden_size
        self.head = Linear(self.hidden_size, self.output_size, dtype=self.dtype, seed=s[1])
        forget_bias = v.real("forget_bias", forget_bias, finite=False)
        if forget_bias:
            if spec.gates == 1:
                raise ValueError(f"forget_bias: only for gated cells, not cell={cell!r}")
            H = self.hidden_size
            for layer in range(self.rnn.num_layers):
                if self.rnn.bias:
                    getattr(self.rnn, f"bias_ih_l{layer}").data[H : 2 * H] += forget_bias
        self.final_state: Any = None  # the rnn's, after a forward: h_n, or (h_n, c_n) for the LSTM
        self._cache = None

    def forward(
        self, x: npt.ArrayLike, state: Any = None, lengths: npt.ArrayLike | None = None
    ) -> np.ndarray:
        """x (T, B, I); state: h0 (L, B, H) / (h0, c0) for the LSTM, or None; lengths (B,).
        Returns y (B, O), or (T, B, O) if many_to_many."""
        self._cache = None
        out, self.final_state = self.rnn(x, state, lengths)  # out (T, B, H)
        if self.many_to_many:
            feats = out
        else:
            h_n = self.final_state[0] if self.rnn.CELL.has_cell_state else self.final_state
            feats = h_n[-1]  # (B, H): top layer, each sequence's last step
        y = self.head.apply(feats)
        if self.training:
            self._cache = (feats, out.shape)
        return y

    def backward(self, dy: npt.ArrayLike) -> np.ndarray:
        """dy like y. Adds every parameter gradient into .grad; returns dx (T, B, I)."""
        feats, out_shape = self._need_cache()
        dy = self._check_input("dy", dy)
        v.check_shape(
            "dy", dy, feats.shape[:-1] + (self.output_size,), "(T, B, O)" if self.many_to_many else "(B, O)"
        )
        dfeat = self.head.accumulate(feats, dy)
        if self.many_to_many:
            dx, _ = self.rnn.backward(dfeat, None)
        else:
            L, B = self.rnn.num_layers, dy.shape[0]
            dh_n = np.zeros((L, B, self.hidden_size), self.dtype)
            dh_n[-1] = dfeat
            # dh_n, or (dh_n, None) for a cell with a cell state: what this family's backward takes
            dstate: Any = (dh_n, None) if self.rnn.CELL.has_cell_state else dh_n
            dx, _ = self.rnn.backward(None, dstate)
        return dx

    def __repr__(self):
        return (
            f"{type(self).__name__}({self.rnn!r}, head={self.head!r}"
            + (", many_to_many=True" if self.many_to_many else "")
            + ")"
        )


class SequenceClassifier(SequenceRegressor):
    """:class:`SequenceRegressor` whose head gives class logits: y (B, C) or (T, B, C) for
    ``num_classes=C``; train with :class:`~rnnkit.layers.CrossEntropyLoss`."""

    default_loss = CrossEntropyLoss

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_classes: int, **kw: Any) -> None:
        super().__init__(cell, input_size, hidden_size, num_classes, **kw)
        self.num_classes = self.output_size

    def predict(
        self, x: npt.ArrayLike, state: Any = None, lengths: npt.ArrayLike | None = None
    ) -> np.ndarray:
        """Class indices (B,) or (T, B) (argmax of the logits), without keeping a cache."""
        was = self.training
        self.eval()
        try:
            return np.argmax(self.forward(x, state, lengths), axis=-1)
        finally:
            self.train(was)
