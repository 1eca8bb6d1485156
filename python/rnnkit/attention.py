"""Former home of these names, kept so that old imports keep working: they live in
:mod:`rnnkit.ops.attention` (the kernels) and :mod:`rnnkit.nn.attention` (the modules)
now (import them from there)."""

from .nn.attention import (
    AdditiveAttention,
    AttentionMemory,
    DotAttention,
    GeneralAttention,
    MemoryGrads,
    make_attention,
)
from .ops.attention import (
    AdditiveAttentionGrads,
    AttentionCache,
    DotAttentionGrads,
    GeneralAttentionGrads,
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
    "AdditiveAttentionGrads",
    "DotAttentionGrads",
    "GeneralAttentionGrads",
    "AttentionCache",
    "AttentionMemory",
    "MemoryGrads",
    "AdditiveAttention",
    "DotAttention",
    "GeneralAttention",
    "make_attention",
]
