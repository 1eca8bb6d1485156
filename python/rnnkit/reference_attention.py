"""Former home of these names, kept so that old imports keep working: they live in
:mod:`rnnkit.reference.attention` now (import them from there)."""

from .reference.attention import (
    additive_attention_backward,
    additive_attention_forward,
    dot_attention_backward,
    dot_attention_forward,
    general_attention_backward,
    general_attention_forward,
    lengths_to_mask,
)

__all__ = [
    "additive_attention_forward",
    "additive_attention_backward",
    "dot_attention_forward",
    "dot_attention_backward",
    "general_attention_forward",
    "general_attention_backward",
    "lengths_to_mask",
]
