"""Former home of these names, kept so that old imports keep working: they live in
:mod:`rnnkit.models.seq2seq` now (import them from there)."""

from .models.seq2seq import DecoderState, Encoded, Seq2Seq

__all__ = ["Seq2Seq", "DecoderState", "Encoded"]
