"""The stream: `StreamingSeparator` takes audio in blocks of any size and returns the stems that are final so far.

See `samaudio.streaming` for the pipeline and the reasons of its choices.

Legend: ch channels, n frames at the input rate, L samples at 48 kHz, W / V / S window / overlap / stride in
latent frames, H hop (samples per latent frame at 48 kHz), C codec latent channels, K candidates.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from samaudio.errors import CancelledError, InvalidAudioError, StreamClosedError
from samaudio.processor import Anchor, VideoPrompt
from samaudio.streaming.batch import LocalWorker
from samaudio.streaming.input_buffer import InputBuffer
from samaudio.streaming.jobs import StreamText, WindowJob, WindowStems, WindowWorker, window_anchors, window_video
from samaudio.streaming.overlap_add import OverlapAdd
from samaudio.streaming.prompts import PromptState, null_sum_residual
from samaudio.streaming.resample import StreamResampler
from samaudio.streaming.settings import StreamCounters, StreamSettings

if TYPE_CHECKING:
    from samaudio.model.model import SAMAudio
    from samaudio.processor import SAMAudioProcessor

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # on_progress(frames_done, frames_known), both at the input rate

# Largest accepted |sample|: 60 dB above full scale. Beyond it float32 arithmetic in resampling, the codec and the
# overlap-add can overflow to inf/NaN (3.4e38 samples did, at some rates and not others), so such input is refused
# at every rate alike (issue 19).
MAX_SAMPLE = 1000.0

CANCEL_POLL = 0.05  # seconds between looks at a cancel while a stream waits for its worker's stems


@dataclass
class SeparatedBlock:
    """Final stems of input frames [start, start + frames), at the input rate."""

    start: int  # first frame, at the input rate
    target: np.ndarray  # (frames, ch) float32, the first prompt's
    residual: np.ndarray  # (frames, ch) float32
    targets: list[np.ndarray] = field(default_factory=list)  # P x (frames, ch): one per prompt, in order

    @property
    def frames(self) -> int:
        return self.target.shape[0]



class StreamingSeparator:
    """One stream: push blocks of frames, get back the stems that are final; `finish()` flushes the rest.

    The request, checked, is `settings` (`StreamSettings`); the counts for summaries are `counters`
    (`StreamCounters`). Not thread-safe except `cancel()`, which may come from any thread.
    """

    def __init__(
        self,
        model: "SAMAudio",
        processor: "SAMAudioProcessor | None",
        description: str,
        anchors: Sequence[Anchor] = (),
        *,
        video: VideoPrompt | None = None,
        worker: WindowWorker | None = None,
        on_progress: Progress | None = None,
        on_step: Callable[[int, int], None] | None = None,
        **request: Any,
    ):
        """`request` is the rest of what the stream is asked (`sample_rate` and `channels`, then windows, solver,
        seed, candidates, spans, prompts, ...): the arguments of `StreamSettings.check`, the one place that names,
        defaults and checks them. Bad arguments raise named errors before any model work."""
        self.settings: StreamSettings = StreamSettings.check(model, description, anchors, video=video, **request)
        self.counters = StreamCounters()
        self.model = model
        self.on_progress = on_progress
        self.on_step = on_step
        self.worker: WindowWorker = worker if worker is not None else LocalWorker(model, processor)
        self.video = video  # freed when the stream closes

        st = self.settings
        plan = st.plan
        self._width = 2 * model.config.audio_codec.codebook_dim  # 2C noise channels per frame
        self._prompts = [PromptState(p, st.seed, plan) for p in st.prompts]
        # The model's residual of one prompt is everything but that sound; with several prompts (or null-sum) the
        # residual is the mix minus the targets, made at the input rate from the frames pushed (_blocks).
        # A caller that takes no residual (`residual=False`) gets the mix minus the target, made the same way, and
        # the model decodes the target alone.
        P, ch = len(self._prompts), st.channels
        self._rows = P * ch + (ch if st.model_residual else 0)  # targets by prompt, then the model's residual
        self._x: list[torch.Tensor] = []  # (ch, m) input frames not yet emitted, kept when the residual needs them
        # evaluations per window, for progress inside windows (None until the solver says: learned from window 0)
        from samaudio.model.model import ode_evaluations

        self._evals_per_window = ode_evaluations(st.ode_opt)
        self._evals_base = 0  # counters.evaluations_done before the running submission
        self._step_counts: list[int] = []  # evaluations of each job of the running submission

        self._up = StreamResampler(st.sample_rate, plan.sample_rate, ch)
        self._down = StreamResampler(plan.sample_rate, st.sample_rate, self._rows)
        self._input = InputBuffer(ch)  # (ch, L) the input at 48 kHz that windows still need
        self._next = 0  # next window to run
        self._stream_id = uuid.uuid4().hex  # names the stream's window audio across processes (WindowJob.mixture)
        # target rows then residual rows, room for one model call's windows: (max_batch - 1) strides + a window
        self._ola = OverlapAdd(self._rows, (st.max_batch - 1) * plan.stride * plan.hop + plan.samples)
        self._emitted = 0  # frames handed out in blocks

        self._closed: str | None = None  # why the stream is closed, once it is
        self._cancelled = threading.Event()
        self._busy = threading.Lock()  # held while push/finish run
        self._pending: concurrent.futures.Future | None = None

    # ------------------------------------------------------------------ checks, before any model work

    def check_frames(self, frames: Any) -> np.ndarray:
        """A pushed block as (n, ch) float32 (a copy when converted), or a named error; changes no state."""
        arr = frames if isinstance(frames, np.ndarray) else np.asarray(frames)
        if arr.ndim != 2 or arr.shape[1] != self.settings.channels:
            raise InvalidAudioError(
                f"a block of shape {arr.shape} was pushed to a stream of {self.settings.channels} channel(s): give "
                f"(frames, {self.settings.channels}) arrays, frames interleaved as rows"
            )
        if arr.dtype.kind != "f":
            raise InvalidAudioError(
                f"a block of dtype {arr.dtype} was pushed: give float samples in [-1, 1], e.g. "
                "x.astype(np.float32) / 32768 for int16"
            )
        arr = arr.astype(np.float32, copy=False)
        # NaN compares false, so one min and one max (no temporaries) find NaN, inf and huge finite samples alike
        if arr.size and not (-MAX_SAMPLE <= arr.min() and arr.max() <= MAX_SAMPLE):
            bad_mask = ~(np.abs(arr) <= MAX_SAMPLE)
            bad = int(bad_mask.sum())
            first = int(np.argwhere(bad_mask)[0, 0])
            raise InvalidAudioError(
                f"a block of {arr.shape[0]} frames has {bad} sample(s) that are NaN, infinite or beyond "
                f"+-{MAX_SAMPLE:g}, the first at frame {self.counters.frames_in + first} of the stream: samples are "
                "nominally in [-1, 1]; replace the NaN and infinite ones (e.g. with 0), scale the audio down, and "
                "send it again"
            )
        return arr

    # ------------------------------------------------------------------ the verbs

    def push(self, frames: np.ndarray) -> list[SeparatedBlock]:
        """Add (n, ch) float32 frames (n may be 0); returns the stems that became final (0 or 1 block)."""
        self._check_open()
        block = self.check_frames(frames)
        total, after = self.settings.total_frames, self.counters.frames_in + block.shape[0]
        if total is not None and after > total:
            raise InvalidAudioError(
                f"a block of {block.shape[0]} frames would bring the stream to {after} frames, past its stated total "
                f"of {total}: state the stream's real length, or none"
            )
        with self._busy:
            self._check_open()
            try:
                pieces = self._slices(block.shape[0])
                out: list[torch.Tensor] = []
                for i, (a, b) in enumerate(pieces):
                    x = torch.from_numpy(block[a:b].T.copy())  # (ch, m), ours: never the caller's memory
                    self.counters.frames_in += b - a
                    if not self.settings.model_residual:
                        self._x.append(x)
                    self._input.append(self._up.push(x))
                    out += self._run(final=False, drain=i == len(pieces) - 1)
                return self._blocks(out, limit=None)
            except BaseException as e:
                self._fail(e)
                raise
            finally:
                self._after_call()

    def finish(self) -> list[SeparatedBlock]:
        """Flush: the remaining stems; afterwards the blocks returned cover every frame pushed, exactly."""
        self._check_open()
        with self._busy:
            self._check_open()
            try:
                self._input.append(self._up.finish())
                out = self._run(final=True, drain=True)
                blocks = self._blocks(out, limit=self.counters.frames_in)
                assert self._emitted == self.counters.frames_in, (self._emitted, self.counters.frames_in)
                self._close("finished")
                self._progress()
                return blocks
            except BaseException as e:
                self._fail(e)
                raise
            finally:
                self._after_call()

    def cancel(self) -> None:
        """Stop the stream: the one entry point for cancelling it. Its windows stop at the model's next solver
        step (`WindowJob.should_stop`), its queued ones are dropped (the worker's `cancel`, if it has one); a push
        or finish in progress raises `CancelledError`, later ones `StreamClosedError`. Safe from any thread,
        idempotent."""
        self._cancelled.set()
        pending = self._pending
        if pending is not None:
            pending.cancel()  # a pool may drop a job not yet started
        cancel_worker = getattr(self.worker, "cancel", None)
        if cancel_worker is not None:  # a stream's view of a shared pool drops every window it still holds
            cancel_worker()
        if self._busy.acquire(blocking=False):
            try:
                if self._closed is None:
                    self._close("cancelled")
            finally:
                self._busy.release()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def held_samples(self) -> int:
        """Samples (per channel) held in the stream's buffers: bounded by a few windows, not by the stream."""
        return self._up.held + self._input.length + self._ola.length + self._down.held + sum(x.shape[-1] for x in self._x)

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        why = self._closed or ("cancelled" if self._cancelled.is_set() else None)
        if why is not None:
            raise StreamClosedError(f"this stream is {why}: start a new StreamingSeparator")

    def _close(self, why: str) -> None:
        self._closed = why
        # free the buffers; the counters stay for summaries
        self._input = InputBuffer(0)
        self._ola = OverlapAdd(0, 0)
        self._x = []
        for prompt in self._prompts:
            prompt.text = StreamText(prompt.description)  # the encoded features go with the old one
            prompt.noise = {}
        self._up = self._down = StreamResampler(1, 1, 0)
        self.video = None

    def _fail(self, e: BaseException) -> None:
        if isinstance(e, CancelledError) or self._cancelled.is_set():
            self._close("cancelled")
        else:
            logger.warning("closing stream after %s: %s", type(e).__name__, e)
            self._close(f"closed after an error ({type(e).__name__})")

    def _after_call(self) -> None:
        self._pending = None
        if self._cancelled.is_set() and self._closed is None:
            self._close("cancelled")

    def _slices(self, n: int) -> list[tuple[int, int]]:
        """Split a push into pieces of about `max_batch` strides, so buffers stay bounded however large it is."""
        st = self.settings
        plan = st.plan
        per = max(1, -(-st.max_batch * plan.stride * plan.hop * st.sample_rate // plan.sample_rate))
        return [(a, min(n, a + per)) for a in range(0, n, per)] or [(0, 0)]

    def _run(self, *, final: bool, drain: bool) -> list[torch.Tensor]:
        """Separate the windows that can run now, stitch them, and return newly final output pieces (2ch, m)."""
        plan, out = self.settings.plan, []
        y_end = self._input.end
        length = self._up.n_out  # 48 kHz samples known so far (all of them once final)
        while True:
            ready, k = [], self._next
            while len(ready) < self.settings.max_batch and (
                plan.needed(k, length) if final else plan.start(k) + plan.samples <= y_end
            ):
                ready.append(k)
                k += 1
            if not ready or (not final and not drain and len(ready) < self.settings.max_batch):
                break  # nothing to do, or wait for a full batch while a large push goes on
            if self._cancelled.is_set():
                raise CancelledError(f"stream cancelled before window {ready[0]}")
            stems = self._separate(ready)
            P = len(self._prompts)
            for i, k in enumerate(ready):
                self._stitch(k, stems[i * P : (i + 1) * P])
            self._next = ready[-1] + 1
            # stitched samples are final up to where the next window starts (or the end, once known)
            done = min(plan.start(self._next), length) if final else plan.start(self._next)
            out.append(self._down.push(self._ola.take(done)))
            self._input.drop(plan.start(self._next))
            self.counters.frames_out = min(self._down.n_out, self.counters.frames_in)
            self._progress()
        if final:
            if self._ola.start < length:
                out.append(self._down.push(self._ola.take(length)))
            out.append(self._down.finish())
            self.counters.frames_out = self.counters.frames_in
        return out

    def _separate(self, ks: list[int]) -> list[WindowStems]:
        """Stems of windows `ks`, all prompts of each in one submission: window-major, prompt-minor."""
        jobs = [job for k in ks for job in self._jobs(k)]
        self._evals_base = self.counters.evaluations_done
        if self.on_step is not None:  # each job counts its own evaluations: a worker may split them over calls
            self._step_counts = [0] * len(jobs)
            for j, job in enumerate(jobs):
                job.on_step = functools.partial(self._step, j)
        future = self.worker.submit(jobs)
        self._pending = future
        if self._cancelled.is_set():  # cancel() may have looked for a pending future just before it was set
            future.cancel()
        try:
            stems = self._wait(future)
        except concurrent.futures.CancelledError as e:
            raise CancelledError(f"stream cancelled while windows {ks[0]}..{ks[-1]} were pending") from e
        finally:
            self._pending = None
        if len(stems) != len(jobs):
            raise RuntimeError(f"worker returned {len(stems)} results for {len(jobs)} jobs")
        P = len(self._prompts)
        self.counters.windows_done += len(ks)
        self.counters.nfe += sum(s.nfe for s in stems[::P])  # a window's prompts share its model calls
        if self._evals_per_window is None and stems:
            self._evals_per_window = stems[0].nfe  # an adaptive solver: the first window's count stands for all
        self.counters.evaluations_done = self._evals_base + sum(s.nfe for s in stems)
        for i, (job, s) in enumerate(zip(jobs, stems)):
            if s.gated:
                self.counters.windows_gated += i % P == 0  # a window's prompts are gated together
                continue
            self.counters.candidates_evaluated += job.candidates * job.audio.shape[0]
            if s.scores is not None and s.chosen is not None:
                self.counters.chosen_scores += s.scores.gather(1, s.chosen.view(-1, 1)).view(-1).tolist()
        logger.debug("windows %d..%d separated (%d in one call)", ks[0], ks[-1], len(ks))
        return stems

    def _wait(self, future: concurrent.futures.Future) -> list[WindowStems]:
        """The worker's stems. A cancel ends the wait within `CANCEL_POLL` seconds, also while the model call runs
        on for other streams that share it (their rows finish; this stream's are dropped): the stream is freed at
        once, not when the shared call ends."""
        while True:
            try:
                return future.result(timeout=CANCEL_POLL)
            except concurrent.futures.TimeoutError:
                if self._cancelled.is_set():
                    raise concurrent.futures.CancelledError() from None

    def _job(self, k: int) -> WindowJob:
        """Window k's job of the first prompt."""
        return self._jobs(k)[0]

    def _jobs(self, k: int) -> list[WindowJob]:
        """Window k's jobs, one per prompt, sharing its audio (and video frames)."""
        st = self.settings
        plan = st.plan
        audio = self._input.window(plan.start(k), plan.samples)  # (ch, W*H), the last one zero-padded
        f0 = k * plan.stride
        video = window_video(self.video, f0, plan)  # (F, 3, Hv, Wv) or None
        jobs = []
        for prompt in self._prompts:
            jobs.append(
                WindowJob(
                    audio=audio,
                    text=prompt.text,
                    anchor_frames=window_anchors(prompt.anchor_frames, f0, plan.frames),
                    noise=prompt.window_noise(f0, plan, self._width, st.candidates),  # (W, 2C), or (K, W, 2C)
                    watermark_message=prompt.message,
                    plan=plan,
                    ode_opt=st.ode_opt,
                    index=k,
                    first_frame=f0,
                    masked_video=video,
                    should_stop=self._cancelled.is_set,
                    predict_spans=st.predict_spans,
                    span_gate=st.span_gate,
                    span_threshold=st.span_threshold,
                    decode_residual=st.model_residual,
                    mixture=f"{self._stream_id}:{k}",
                )
            )
        return jobs

    def _step(self, j: int, evaluations: int) -> None:
        """Job j of the running submission made its `evaluations`-th evaluation (on the worker's thread)."""
        self._step_counts[j] = evaluations
        self.counters.evaluations_done = self._evals_base + sum(self._step_counts)
        self.on_step(self.counters.evaluations_done, self.evaluations_planned)

    @property
    def evaluations_planned(self) -> int:
        """Evaluations the windows of the frames known so far need (all of the stream's, once its length is
        known), counted per prompt; 0 while an adaptive solver has not said how many a window takes."""
        n = self.settings.total_frames if self.settings.total_frames is not None else self.counters.frames_in
        known = -(-n * self.settings.plan.sample_rate // self.settings.sample_rate)
        windows = max(self.settings.plan.count(known), self.counters.windows_done)
        return windows * len(self._prompts) * (self._evals_per_window or 0)

    def _stitch(self, k: int, stems: Sequence[WindowStems]) -> None:
        """Window k's stems, one per prompt: the targets in order, then the first one's residual if it is used."""
        plan = self.settings.plan
        parts = [s.target for s in stems] + ([stems[0].residual] if self.settings.model_residual else [])
        for stem in parts:
            if stem.shape != (self.settings.channels, plan.samples):
                raise RuntimeError(f"worker returned stems of shape {tuple(stem.shape)} for window {k}")
        self._ola.add(plan.start(k), [p.float() for p in parts], plan.weights(k))

    def _blocks(self, pieces: list[torch.Tensor], limit: int | None) -> list[SeparatedBlock]:
        """Join output pieces (2ch, m) into one SeparatedBlock; `limit` cuts at the stream's length when finishing."""
        pieces = [p for p in pieces if p.shape[-1]]
        if not pieces:
            return []
        z = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)  # (2ch, m)
        start = self._emitted
        if limit is not None:
            z = z[:, : max(0, limit - start)]
        if not z.shape[-1]:
            return []
        m = z.shape[-1]
        self._emitted = start + m
        ch, P = self.settings.channels, len(self._prompts)
        rows = z.float().numpy()  # (rows, m): P x ch target rows, then ch residual rows if the model's is used
        # Interleaved by stacking whole rows: ~10x faster than copying a transposed view column-slice.
        targets = [np.stack(list(rows[p * ch : (p + 1) * ch]), axis=1) for p in range(P)]  # P x (m, ch)
        if self.settings.model_residual:
            residual = np.stack(list(rows[P * ch :]), axis=1)  # (m, ch)
        else:
            mix = self._take_x(m).numpy().T  # (m, ch) the frames pushed, exactly
            if self.settings.null_sum:
                targets, residual = null_sum_residual(mix, targets)
            else:  # several prompts: the mix minus the targets, without rounding them
                residual = (mix - np.sum(targets, axis=0, dtype=np.float64)).astype(np.float32)
        return [SeparatedBlock(start=start, target=targets[0], residual=residual, targets=targets)]

    def _take_x(self, m: int) -> torch.Tensor:
        """The next m pushed frames (ch, m), dropped from the kept input."""
        x = torch.cat(self._x, dim=-1) if len(self._x) != 1 else self._x[0]
        assert x.shape[-1] >= m, (x.shape, m)
        self._x = [x[:, m:]] if x.shape[-1] > m else []
        return x[:, :m]

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(min(self.counters.frames_out, self.counters.frames_in), self.counters.frames_in)

