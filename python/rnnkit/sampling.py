"""Former home of these names, kept so that old imports keep working: they live in
:mod:`rnnkit.models.sampling` now (import them from there)."""

from .models.sampling import (
    ConstantSchedule,
    ExponentialDecay,
    InverseSigmoidDecay,
    LinearDecay,
    SamplingPlan,
    SamplingTape,
    ScheduledSampler,
    make_schedule,
    sample_tokens,
    scheduled_sampling_backward,
    scheduled_sampling_forward,
    teacher_forcing_mask,
)

__all__ = [
    "ConstantSchedule",
    "LinearDecay",
    "ExponentialDecay",
    "InverseSigmoidDecay",
    "make_schedule",
    "teacher_forcing_mask",
    "scheduled_sampling_forward",
    "scheduled_sampling_backward",
    "ScheduledSampler",
    "SamplingTape",
    "SamplingPlan",
    "sample_tokens",
]
