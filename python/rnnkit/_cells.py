"""The cell table: the one place where the cell families are named.

Every layer of rnnkit that needs to know which cell it runs (the kernels in ``ops``, the oracles
in ``reference``, the modules in ``nn``, the models, the benchmark and the demos) looks the
family up here and asks the :class:`Cell` what it needs (its gate count, whether it carries a
cell state c, its options), instead of comparing names itself. Adding a cell family means one
row here, its kernel in ``cpp/cells.hpp``, its binding, and its module classes in
``nn/recurrent.py`` and ``nn/cells.py``.

Shape letters: G gate blocks (1 RNN, 4 LSTM in order i, f, g, o, 3 GRU in order r, z, n).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import _validate as v

__all__ = ["Cell", "RNN_CELL", "LSTM_CELL", "GRU_CELL", "CELLS", "CELL_NAMES", "cell_spec"]


@dataclass(frozen=True)
class Cell:
    """One cell family: its name, gate blocks G, recurrent states, options and torch name.

    ``options`` maps each keyword option of the family to its allowed values, the default first
    (``nonlinearity`` for the RNN, ``reset_after`` for the GRU).
    """

    name: str
    gates: int
    gate_order: str
    state_names: tuple[str, ...]
    options: dict = field(default_factory=dict, compare=False, hash=False)
    torch_name: str = ""

    @property
    def has_cell_state(self) -> bool:
        """True for the LSTM, whose state is the pair (h, c)."""
        return len(self.state_names) == 2

    @property
    def default_options(self) -> dict:
        """Each option at its default value, e.g. ``{"nonlinearity": "tanh"}``."""
        return {k: allowed[0] for k, allowed in self.options.items()}

    def __repr__(self) -> str:
        return f"Cell({self.name!r}, G={self.gates})"


RNN_CELL = Cell("rnn", 1, "h", ("h",), {"nonlinearity": ("tanh", "relu")}, "RNN")
LSTM_CELL = Cell("lstm", 4, "ifgo", ("h", "c"), {}, "LSTM")
GRU_CELL = Cell("gru", 3, "rzn", ("h",), {"reset_after": (True, False)}, "GRU")

# name -> Cell, in the order rnn, lstm, gru (the order the docs, demos and benchmark use).
CELLS: dict[str, Cell] = {c.name: c for c in (RNN_CELL, LSTM_CELL, GRU_CELL)}
CELL_NAMES: tuple[str, ...] = tuple(CELLS)


def cell_spec(cell: str | Cell, name: str = "cell") -> Cell:
    """The :class:`Cell` of a family name ("rnn", "lstm" or "gru"); ValueError naming ``name``
    otherwise. A Cell is returned unchanged."""
    if isinstance(cell, Cell):
        return cell
    return CELLS[v.choice(name, cell, CELL_NAMES)]
