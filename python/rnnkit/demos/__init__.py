"""Runnable demos: ``python -m rnnkit demo NAME`` (see :data:`DEMOS`)."""

DEMOS = {
    "adding": "rnnkit.demos.adding",  # the adding problem: vanilla RNN vs LSTM vs GRU, T = 100
}

__all__ = ["DEMOS"]
