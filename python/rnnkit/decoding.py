"""Former home of these names, kept so that old imports keep working: they live in
:mod:`rnnkit.models.decoding` now (import them from there)."""

from .models.decoding import DecodeResult, beam_search, greedy_decode, length_penalty, score_sequences

__all__ = ["DecodeResult", "greedy_decode", "beam_search", "score_sequences", "length_penalty"]
