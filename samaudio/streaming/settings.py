"""A stream's request, checked once (`StreamSettings`), and the counts it reports (`StreamCounters`).

`StreamingSeparator.validate` builds the settings from the caller's arguments, with the defaults resolved and
the window plan fitted to a stream of known length; the separator only reads them afterwards. The counters are
what a stream's summary reports; the server reads them after the stream ends (issue 15).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from samaudio.streaming.plan import WindowPlan
from samaudio.streaming.prompts import Prompt


@dataclass(frozen=True)
class StreamSettings:
    """What a stream was asked to do, checked: never changed after the constructor."""

    prompts: tuple[Prompt, ...]  # every sound to separate, in order; one for a plain description (and anchors)
    sample_rate: int  # the input's rate in Hz (the stems come back at it)
    channels: int
    seed: int  # seeds the starting noise and watermark of prompts that give none
    ode_opt: dict[str, Any] | None  # the solver, as `SAMAudio.separate` takes it; None for the official one
    max_batch: int  # windows handed to the worker at once: bounds the buffers and how far the stream runs ahead
    candidates: int  # starting noises per window, one kept by a ranker
    predict_spans: bool  # anchors from the span predictor for windows without any
    span_gate: bool  # skip windows in which the span predictor finds no active frame
    span_threshold: float  # frame probability above which the span predictor calls a frame active
    null_sum: bool  # targets and residual sum to the input exactly
    residual: bool  # whether the caller takes a residual (without one the model decodes the target alone)
    total_frames: int | None  # the stream's length at its rate, when known
    plan: WindowPlan  # the windows: one window of the stream's own length when it is shorter than a window

    @property
    def model_residual(self) -> bool:
        """The model's residual is used for one prompt; with several (or null-sum), or none taken, the residual is
        the mix minus the targets, made at the input rate from the frames pushed."""
        return len(self.prompts) == 1 and not self.null_sum and self.residual


@dataclass
class StreamCounters:
    """A stream's counts for its summary: they stay after the stream closes."""

    frames_in: int = 0  # frames pushed, at the input rate
    frames_out: int = 0  # frames whose stems are final (returned, or returned by this call)
    windows_done: int = 0
    nfe: int = 0  # vector-field evaluations summed over windows (a window's prompts share its model calls)
    evaluations_done: int = 0  # vector-field evaluations made for this stream, counted per prompt
    windows_gated: int = 0  # windows the span gate found silent (no model call)
    candidates_evaluated: int = 0  # candidate solutions solved, over windows and channels
    # the kept candidate's ranker score, per ranked window and channel
    chosen_scores: list[float] = field(default_factory=list)
