"""Running windows: jobs of any streams in as few model calls as their settings allow.

Legend: B batch items (one per channel of each job), K candidates, W latent frames per window, H hop, C codec
latent channels, S text tokens of the longest description, Dt text feature width.
"""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from samaudio.processor import Batch, FrameAnchor, anchor_frame
from samaudio.streaming.jobs import WindowJob, WindowStems

if TYPE_CHECKING:
    from samaudio.model.model import SAMAudio
    from samaudio.processor import SAMAudioProcessor


def separate_windows(model: "SAMAudio", processor: "SAMAudioProcessor", jobs: Sequence[WindowJob]) -> list[WindowStems]:
    """Run jobs through `model.separate`, one call per group of jobs with the same length and ODE options.

    Each channel of each job is one batch item; rows of one call are equally long and unmasked, so a job's
    stems do not depend on which jobs share its call. Jobs of different streams may have different text
    lengths: features are zero-padded and masked.
    """
    out: list[WindowStems | None] = [None] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        key = (job.audio.shape[-1], repr(job.ode_opt), job.candidates, job.predict_spans, job.span_gate,
               job.decode_residual)
        groups.setdefault(key + (job.span_threshold,), []).append(i)
    for idx in groups.values():
        for i, stems in zip(idx, _separate_group(model, processor, [jobs[i] for i in idx])):
            out[i] = stems
    return out  # type: ignore[return-value]


def window_batch(
    processor: "SAMAudioProcessor", jobs: Sequence[WindowJob], anchors: Sequence[Sequence[FrameAnchor]] | None = None
) -> Batch:
    """The model batch of `jobs`, built from latent frames: one item per channel of each job, in order, each with
    its job's anchors (or `anchors`, one list per item, in window frames) and masked video frames.

    The processor's rules without its checks: a window's audio was checked once, when it was pushed, and its
    anchors are frames already, so they take no round trip through seconds.
    """
    rows = [row for job in jobs for row in job.audio]  # B x (W*H,): one item per channel, mono as it is
    audios = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)[:, None]  # (B, 1, Lmax)
    wav_sizes = torch.tensor([row.shape[0] for row in rows], dtype=torch.long)  # (B,)
    sizes = processor.wav_to_feature_idx(wav_sizes)  # (B,) float32, ceil(L / hop)
    batch = Batch(
        audios=audios,
        sizes=sizes,
        wav_sizes=wav_sizes,
        descriptions=[job.description for job in jobs for _ in range(job.audio.shape[0])],
        hop_length=processor.audio_hop_length,
        audio_sampling_rate=processor.audio_sampling_rate,
    )
    if anchors is None:
        anchors = [job.anchor_frames for job in jobs for _ in range(job.audio.shape[0])]
    batch.set_anchor_frames(anchors)
    if any(job.masked_video is not None for job in jobs):
        # Set here, not through the processor, which would stretch F < W frames over the window. The encoder pads
        # each item's features to the window with zeros, so a job without video (or past its video's end) gets
        # exactly the zeros the model uses when no item has a video: results do not depend on the batch.
        none = torch.zeros(0, 3, 1, 1, dtype=torch.uint8)
        batch.masked_video = [
            none if job.masked_video is None else job.masked_video for job in jobs for _ in range(job.audio.shape[0])
        ]
    return batch


def _separate_group(model: "SAMAudio", processor: "SAMAudioProcessor", jobs: list[WindowJob]) -> list[WindowStems]:
    """Jobs of equal length, ODE, candidate count and span settings, in one model call (gated ones in none)."""
    out: list[WindowStems | None] = [None] * len(jobs)
    anchors: list[list[FrameAnchor]] | None = None
    first = jobs[0]
    mixtures = _mixture_features(model, jobs)  # per job (ch, W, 2C): each window's audio encoded once
    if first.predict_spans or first.span_gate:
        active = _window_activity(model, jobs, mixtures, first.span_threshold)  # B x (W,) bool, one per channel
        rows = _job_rows(jobs)
        if first.span_gate:
            for i, (job, (a, b)) in enumerate(zip(jobs, rows)):
                if not any(bool(act.any()) for act in active[a:b]):
                    target = torch.zeros_like(job.audio)  # (ch, W*H) silence
                    out[i] = WindowStems(target=target, residual=job.audio.clone(), gated=True)
        if first.predict_spans:  # a window's own anchors win, as in SAMAudio.separate
            predicted = _activity_anchors(model, active)
            anchors = [list(job.anchor_frames) or predicted[r] for job, (a, b) in zip(jobs, rows) for r in range(a, b)]
    run = [i for i in range(len(jobs)) if out[i] is None]
    if run:
        if anchors is not None:
            rows = _job_rows(jobs)
            anchors = [anchors[r] for i in run for r in range(*rows[i])]
        solved = _solve(model, processor, [jobs[i] for i in run], [mixtures[i] for i in run], anchors)
        for i, stems in zip(run, solved):
            out[i] = stems
    return out  # type: ignore[return-value]


def _job_rows(jobs: Sequence[WindowJob]) -> list[tuple[int, int]]:
    """Each job's batch items (one per channel) as [a, b) row ranges."""
    rows, r = [], 0
    for job in jobs:
        rows.append((r, r + job.audio.shape[0]))
        r += job.audio.shape[0]
    return rows


def _mixture_features(model: "SAMAudio", jobs: Sequence[WindowJob]) -> list[torch.Tensor]:
    """Each job's codec features (ch, W, 2C), as `SAMAudio.separate` makes them, in one codec call.

    The prompts of one window share its audio (`StreamingSeparator` gives them one tensor and one `mixture` name):
    it is encoded once for all of them, and the features are shared by their batch rows (issue 17: the mixture is
    encoded once, not once per prompt), also when the jobs arrive as separate copies (a cluster replica).
    """
    first: dict[Any, int] = {}  # a window's audio (its name, else the tensor's id) -> its index among the distinct
    distinct: list[torch.Tensor] = []
    keys = [job.mixture if job.mixture is not None else id(job.audio) for job in jobs]
    for job, key in zip(jobs, keys):
        if key not in first:
            first[key] = len(distinct)
            distinct.append(job.audio)
    with torch.inference_mode():
        rows = [row for audio in distinct for row in audio]  # R x (W*H,): the distinct audios' channels
        audios = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)[:, None]  # (R, 1, W*H)
        features = model.encode_audio(audios, _all_stopped(jobs))  # (R, W, 2C); stops between codec layers
    starts = [0]
    for audio in distinct:
        starts.append(starts[-1] + audio.shape[0])
    out = []
    for key in keys:
        d = first[key]
        out.append(features[starts[d] : starts[d + 1]])  # (ch, W, 2C)
    return out


def _window_activity(
    model: "SAMAudio", jobs: Sequence[WindowJob], mixtures: Sequence[torch.Tensor], threshold: float
) -> list[torch.Tensor]:
    """The span predictor's active latent frames of every channel of every job: B tensors (W,) bool."""
    descriptions = [job.description for job in jobs for _ in range(job.audio.shape[0])]
    with torch.inference_mode():
        _, active = model.frame_activity(descriptions, torch.cat(list(mixtures)), None, threshold)
    return list(active.cpu())  # B x (W,)


def _activity_anchors(model: "SAMAudio", active: list[torch.Tensor]) -> list[list[FrameAnchor]]:
    """'+' anchors (window frames) on each item's active runs, as SAMAudio.predict_spans makes them: through the
    predictor's seconds (float32, as the official code), read back by the processor's rule."""
    from samaudio.model.span_predictor import anchors_from_spans, spans_from_activity

    predictor = model.span_predictor
    spans = spans_from_activity(torch.stack(active), predictor.hop_length, predictor.sample_rate)
    rate, hop = model.sample_rate, model.hop_length
    return [
        [(sign, anchor_frame(float(s), rate, hop), anchor_frame(float(e), rate, hop)) for sign, s, e in item]
        for item in anchors_from_spans(spans)
    ]


def _solve(
    model: "SAMAudio",
    processor: "SAMAudioProcessor",
    jobs: list[WindowJob],
    mixtures: list[torch.Tensor],
    anchors: list[list[FrameAnchor]] | None,
) -> list[WindowStems]:
    channels = [job.audio.shape[0] for job in jobs]
    K = jobs[0].candidates
    batch = window_batch(processor, jobs, anchors)
    texts = [job.text.features(model) for job in jobs]  # [((1, S_t, Dt), (1, S_t))]
    S = max(features.shape[1] for features, _ in texts)
    feats, masks = [], []
    for (features, mask), ch in zip(texts, channels):
        pad = S - features.shape[1]
        f = torch.nn.functional.pad(features, (0, 0, 0, pad))  # (1, S, Dt)
        m = torch.nn.functional.pad(mask, (0, pad), value=False)  # (1, S)
        feats.append(f.expand(ch, -1, -1))
        masks.append(m.expand(ch, -1))
    # rows b*K + k: candidate k of item b; every channel of a job starts from the job's K noises
    noise = torch.cat(
        [job.noise.reshape(K, *job.noise.shape[-2:]).repeat(ch, 1, 1) for job, ch in zip(jobs, channels)]
    )  # (B*K, W, 2C)
    # rows 2n, 2n+1 are target and residual of row n: each row repeats its job's two messages
    message = torch.cat([job.watermark_message.repeat(ch * K, 1) for job, ch in zip(jobs, channels)])  # (2BK, 16)
    res = model.separate(
        batch,
        noise=noise.to(model.device),
        ode_opt=jobs[0].ode_opt,
        reranking_candidates=K,
        watermark_message=message.to(model.device),
        text_features=(torch.cat(feats).to(model.device), torch.cat(masks).to(model.device)),
        should_stop=_all_stopped(jobs),
        on_step=_each_step(jobs),
        stems=("target", "residual") if jobs[0].decode_residual else ("target",),
        audio_features=torch.cat(mixtures),  # (B, W, 2C): a window's prompts share its mixture's rows
    )
    out, r = [], 0
    for ch in channels:
        target = torch.stack([res.target[r + c] for c in range(ch)]).float().cpu()  # (ch, W*H)
        residual = None
        if res.residual is not None:
            residual = torch.stack([res.residual[r + c] for c in range(ch)]).float().cpu()  # (ch, W*H)
        scores = None if res.scores is None else res.scores[r : r + ch].clone()  # (ch, K)
        chosen = None if res.scores is None else res.chosen[r : r + ch].clone()  # (ch,)
        out.append(WindowStems(target=target, residual=residual, nfe=res.nfe, scores=scores, chosen=chosen))
        r += ch
    return out


def _all_stopped(jobs: Sequence[WindowJob]) -> Callable[[], bool] | None:
    """A `should_stop` for one model call: stop once no job of it is wanted (None when some job cannot stop)."""
    checks = [job.should_stop for job in jobs]
    if any(check is None for check in checks):
        return None
    return lambda: all(check() for check in checks)


def _each_step(jobs: Sequence[WindowJob]) -> Callable[[int], None] | None:
    """An `on_step` for one model call: tells every job that asked, once per evaluation."""
    hooks = [job.on_step for job in jobs if job.on_step is not None]
    if not hooks:
        return None

    def on_step(evaluations: int) -> None:
        for hook in hooks:
            hook(evaluations)

    return on_step


class LocalWorker:
    """Runs jobs synchronously in the caller's thread and returns a completed future."""

    def __init__(self, model: "SAMAudio", processor: "SAMAudioProcessor | None" = None):
        if processor is None:
            from samaudio.processor import SAMAudioProcessor

            processor = SAMAudioProcessor(model.hop_length, model.sample_rate)
        self.model = model
        self.processor = processor

    def submit(self, jobs: Sequence[WindowJob]) -> concurrent.futures.Future[list[WindowStems]]:
        future: concurrent.futures.Future[list[WindowStems]] = concurrent.futures.Future()
        try:
            future.set_result(separate_windows(self.model, self.processor, jobs))
        except BaseException as e:  # delivered through the future, as a pool's worker thread would
            future.set_exception(e)
        return future

