"""Runnable demos: ``python -m rnnkit demo NAME`` (see :data:`DEMOS`)."""

DEMOS = {
    "adding": "rnnkit.demos.adding",  # the adding problem: vanilla RNN vs LSTM vs GRU, T = 100
    "reverse": "rnnkit.demos.reverse",  # seq2seq with/without attention: reversing token sequences
    "sort": "rnnkit.demos.sort",  # the same on sorting
}

__all__ = ["DEMOS"]
