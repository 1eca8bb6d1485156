"""Sequence models built from :mod:`rnnkit.nn` modules.

* :mod:`.autoregressive`: :class:`OutputRecurrentRNN` (output-to-hidden recurrence) and
  :class:`RecurrentDecoder` (an RNN/LSTM/GRU fed the previous target), with the step protocol.
* :mod:`.sequence`: :class:`SequenceRegressor`, :class:`SequenceClassifier`.
* :mod:`.seq2seq`: :class:`Seq2Seq`, encoder-decoder with attention.
* :mod:`.decoding`: batched greedy and beam search for Seq2Seq.
* :mod:`.sampling`: teacher forcing and scheduled sampling, the one implementation.

models builds on :mod:`rnnkit.nn` and never imports :mod:`rnnkit.train`.
"""

from .autoregressive import OutputRecurrentRNN, RecurrentDecoder, shift_right
from .decoding import DecodeResult, beam_search, greedy_decode, length_penalty, score_sequences
from .sampling import (
    ConstantSchedule,
    ExponentialDecay,
    InverseSigmoidDecay,
    LinearDecay,
    SamplingPlan,
    ScheduledSampler,
    make_schedule,
    sample_tokens,
    scheduled_sampling_backward,
    scheduled_sampling_forward,
    teacher_forcing_mask,
)
from .seq2seq import DecoderState, Encoded, Seq2Seq
from .sequence import SequenceClassifier, SequenceRegressor

__all__ = [
    "OutputRecurrentRNN",
    "RecurrentDecoder",
    "SequenceRegressor",
    "SequenceClassifier",
    "Seq2Seq",
    "DecoderState",
    "Encoded",
    "shift_right",
    "sample_tokens",
    "DecodeResult",
    "greedy_decode",
    "beam_search",
    "score_sequences",
    "length_penalty",
    "ConstantSchedule",
    "LinearDecay",
    "ExponentialDecay",
    "InverseSigmoidDecay",
    "make_schedule",
    "teacher_forcing_mask",
    "scheduled_sampling_forward",
    "scheduled_sampling_backward",
    "ScheduledSampler",
    "SamplingPlan",
]
