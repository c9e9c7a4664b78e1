"""The processor: descriptions, audio and span prompts (anchors) -> a padded `Batch` for `SAMAudio.separate`.

It reproduces the official `SAMAudioProcessor` tensor for tensor (the golden `batch_*` files), with one
difference: bad input raises a named error from `samaudio.errors` (with the numbers and the fix) where the
official code asserts, crashes later in the codec, or silently does something else.

Legend:
    B     items (descriptions, audios)
    L     samples of one item at 48 kHz; Lmax = the longest
    T     latent frames = max(sizes) = ceil(Lmax / hop)
    A     anchor slots = 2 + the most anchors of any item
    N     video frames
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from samaudio.errors import (
    ConfigError,
    InvalidAnchorError,
    InvalidAudioError,
    InvalidRequestError,
)
from samaudio.model.config import SAMAudioConfig
from samaudio.model.hub import CONFIG_NAME, resolve_folder

logger = logging.getLogger(__name__)

__all__ = ["SAMAudioProcessor", "Batch", "Anchor"]

Anchor = tuple[str, float, float]  # (sign, start_seconds, end_seconds); sign "+" present, "-" absent
AudioInput = torch.Tensor | str | os.PathLike

# Anchor id table of the official model (an Embedding of num_anchors + 1 rows, padding_idx = <pad>).
ANCHOR_IDS = {"<null>": 0, "+": 1, "-": 2, "<pad>": 3}
NULL_SLOT, PAD_SLOT = 0, 1  # every item's ids start [<null>, <pad>]: alignment 0 = no prompt, 1 = padded frame
USER_SIGNS = ("+", "-")


def min_audio_samples(hop_length: int) -> int:
    """Fewest samples the codec accepts: it reflect-pads to a multiple of hop, and reflection needs pad < L.

    For L < hop the pad is hop - L, so L > hop / 2; any L >= hop works.
    """
    return hop_length // 2 + 1


def mask_from_sizes(sizes: torch.Tensor) -> torch.Tensor:
    """(B,) frame counts -> (B, T) bool, True on valid frames, T = max(sizes)."""
    T = int(sizes.max().item())
    return torch.arange(T, device=sizes.device) < sizes[:, None]  # (B, T)


def _load_audio_file(path: str | os.PathLike, sample_rate: int) -> torch.Tensor:
    """Read a file with soundfile -> (channels, L) float32 at `sample_rate` (resampled with torchaudio's defaults)."""
    import soundfile as sf

    try:
        data, rate = sf.read(os.fspath(path), dtype="float32", always_2d=True)  # (L, channels)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError or OSError depending on the cause
        raise InvalidAudioError(
            f"cannot read audio file {os.fspath(path)!r}: {e}. Fix: give a WAV, FLAC or OGG file soundfile can "
            "decode, or decode it yourself and pass a (channels, samples) float tensor at "
            f"{sample_rate} Hz"
        ) from e
    wav = torch.from_numpy(data.T.copy())  # (channels, L)
    if rate != sample_rate:
        import torchaudio.functional as AF

        if wav.shape[-1] == 0:
            raise InvalidAudioError(f"audio file {os.fspath(path)!r} holds no samples: give a non-empty file")
        # As the official processor: resample every channel first, then average them.
        wav = AF.resample(wav, rate, sample_rate)
    return wav


def _check_audio(wav: torch.Tensor, where: str, hop_length: int, sample_rate: int) -> None:
    if wav.dim() != 2:
        raise InvalidAudioError(
            f"{where} has shape {tuple(wav.shape)} ({wav.dim()}-D) but must be 2-D (channels, samples) at "
            f"{sample_rate} Hz: use wav[None] for a mono 1-D tensor"
        )
    C, L = wav.shape
    if not wav.is_floating_point():
        raise InvalidAudioError(
            f"{where} has dtype {wav.dtype} but must be floating point in [-1, 1]: "
            "convert it, e.g. wav.float() / 32768 for int16 samples"
        )
    if C == 0 or L == 0:
        raise InvalidAudioError(f"{where} is empty (shape {tuple(wav.shape)}): give at least one channel of samples")
    need = min_audio_samples(hop_length)
    if L < need:
        raise InvalidAudioError(
            f"{where} has {L} samples but the codec needs at least {need} ({need / sample_rate * 1000:.1f} ms at "
            f"{sample_rate} Hz; its reflect padding to a multiple of {hop_length} needs more than half a hop)"
            + (
                "; it looks like (samples, channels): transpose it with wav.T"
                if C > L
                else "; pad it with silence or give longer audio"
            )
        )
    if not bool(torch.isfinite(wav).all()):
        bad = int((~torch.isfinite(wav)).sum())
        raise InvalidAudioError(
            f"{where} has {bad} non-finite sample(s) (NaN or inf): clean the audio, e.g. torch.nan_to_num(wav)"
        )


def _check_anchor(anchor: Any, where: str) -> tuple[str, float, float]:
    if isinstance(anchor, (str, bytes)) or not isinstance(anchor, Sequence) or len(anchor) != 3:
        raise InvalidAnchorError(f"{where} is {anchor!r}; an anchor is a (sign, start_seconds, end_seconds) triple")
    sign, start, end = anchor
    if sign not in USER_SIGNS:
        raise InvalidAnchorError(
            f"{where} has sign {sign!r}: use '+' (the target sound is present) or '-' (it is absent)"
        )
    try:
        start, end = float(start), float(end)
    except (TypeError, ValueError) as e:
        raise InvalidAnchorError(f"{where} has non-numeric times {anchor[1]!r}, {anchor[2]!r}: give seconds") from e
    if not (math.isfinite(start) and math.isfinite(end)):
        raise InvalidAnchorError(f"{where} has non-finite times {start}, {end}: give seconds")
    if start < 0 or end < 0:
        raise InvalidAnchorError(f"{where} has a negative time ({start} s to {end} s): times count from 0 s")
    if start >= end:
        raise InvalidAnchorError(f"{where} starts at {start} s, not before its end {end} s: give start < end")
    return sign, start, end


@dataclass
class Batch:
    """The model's input. Construct positionally as the official `Batch`; anchors are processed on creation."""

    audios: torch.Tensor  # (B, 1, Lmax) float, zero-padded mono, on the inputs' device
    sizes: torch.Tensor  # (B,) float32 whole numbers: valid latent frames, ceil(wav_sizes / hop)
    wav_sizes: torch.Tensor  # (B,) int64: true sample counts
    descriptions: list[str]
    hop_length: int
    audio_sampling_rate: int
    anchors: list[list[Anchor]] | None = None  # as given; None lets separate() predict spans
    audio_pad_mask: torch.Tensor | None = None  # (B, T) bool, True on valid frames
    masked_video: list[torch.Tensor] | None = None  # B tensors (sizes_i, 3, H, W)
    anchor_ids: torch.Tensor = field(init=False)  # (B, A) int64: [<null>, <pad>, sign ids...] padded with <pad>
    anchor_alignment: torch.Tensor = field(init=False)  # (B, T) int64: slot of anchor_ids per frame

    def __post_init__(self):
        if self.audio_pad_mask is None:
            self.audio_pad_mask = mask_from_sizes(self.sizes)
        if self.audios.size(0) != len(self.descriptions):
            raise InvalidRequestError(
                f"{self.audios.size(0)} audios but {len(self.descriptions)} descriptions: "
                "give one description per audio"
            )
        self.process_anchors(self.anchors)

    def process_anchors(self, anchors: list[list[Anchor]] | None) -> None:
        """Set `anchor_ids` (B, A) and `anchor_alignment` (B, T) from per-item (sign, start, end) lists.

        Frame of a time t is ceil(t * sr / hop) (Python floats); anchor k marks frames [start, end) with slot
        2 + k, later anchors overwriting earlier ones and the <pad> slot of padded frames.
        """
        mask = self.audio_pad_mask
        B, T = mask.shape
        alignment = torch.full((B, T), NULL_SLOT, dtype=torch.long, device=mask.device)  # (B, T)
        alignment[~mask] = PAD_SLOT
        if anchors is None:
            ids = torch.tensor([[ANCHOR_IDS["<null>"], ANCHOR_IDS["<pad>"]]] * B, dtype=torch.long)  # (B, 2)
        else:
            if isinstance(anchors, (str, bytes)) or not isinstance(anchors, Sequence):
                raise InvalidAnchorError(
                    f"anchors must be a list with one list of (sign, start, end) per item, got {type(anchors).__name__}"
                )
            if len(anchors) != B:
                raise InvalidRequestError(
                    f"{len(anchors)} anchor lists for {B} audios: give one list per item ([] for none), or None"
                )
            rows = []
            for i, item in enumerate(anchors):
                if isinstance(item, (str, bytes)) or not isinstance(item, Sequence):
                    raise InvalidAnchorError(
                        f"anchors[{i}] is {item!r}; each item needs a list of (sign, start, end) triples ([] for none)"
                    )
                row = [ANCHOR_IDS["<null>"], ANCHOR_IDS["<pad>"]]
                for k, anchor in enumerate(item):
                    sign, start, end = _check_anchor(anchor, f"anchors[{i}][{k}]")
                    s = math.ceil(start * self.audio_sampling_rate / self.hop_length)
                    e = math.ceil(end * self.audio_sampling_rate / self.hop_length)
                    frames = int(self.sizes[i])
                    if s >= min(e, frames):
                        where = f"anchors[{i}][{k}] ({sign}, {start} s, {end} s)"
                        logger.warning("%s covers no frame of the item's %d frames", where, frames)
                    alignment[i, s:e] = len(row)
                    row.append(ANCHOR_IDS[sign])
                rows.append(row)
            A = max(len(r) for r in rows)
            ids = torch.tensor([r + [ANCHOR_IDS["<pad>"]] * (A - len(r)) for r in rows], dtype=torch.long)  # (B, A)
        self.anchor_ids = ids.to(self.audios.device)
        self.anchor_alignment = alignment.to(self.audios.device)

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor to `device`, in place; returns self."""
        self.audios = self.audios.to(device)
        self.anchor_ids = self.anchor_ids.to(device)
        self.anchor_alignment = self.anchor_alignment.to(device)
        self.sizes = self.sizes.to(device)
        self.wav_sizes = self.wav_sizes.to(device)
        if self.audio_pad_mask is not None:
            self.audio_pad_mask = self.audio_pad_mask.to(device)
        if self.masked_video is not None:
            self.masked_video = [v.to(device) for v in self.masked_video]
        return self


class SAMAudioProcessor:
    """Turns (descriptions, audios, anchors, masked videos) into a `Batch`. Holds no weights."""

    config_cls = SAMAudioConfig

    def __init__(self, audio_hop_length: int = 1920, audio_sampling_rate: int = 48000):
        self.audio_hop_length = audio_hop_length
        self.audio_sampling_rate = audio_sampling_rate

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike) -> SAMAudioProcessor:
        """Read only `config.json` of a model folder or hub repo and keep the codec's hop and sample rate.

        Raises `ModelUnavailableError` when the repo cannot be had (offline, gated, missing).
        """
        path = resolve_folder(name_or_path, config_only=True) / CONFIG_NAME
        try:
            fields = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read {path}: {e}") from e
        config = cls.config_cls.from_dict(fields)
        return cls(config.audio_codec.hop_length, config.audio_codec.sample_rate)

    def wav_to_feature_idx(self, wav_idx: torch.Tensor | int | float) -> torch.Tensor | int:
        """Samples -> latent frames, ceil(w / hop) (a float tensor for tensors, as the official)."""
        if isinstance(wav_idx, torch.Tensor):
            return torch.ceil(wav_idx / self.audio_hop_length)
        return math.ceil(wav_idx / self.audio_hop_length)

    def feature_to_wav_idx(self, feature_idx: torch.Tensor | int | float) -> torch.Tensor | int | float:
        """Latent frames -> samples, f * hop."""
        return feature_idx * self.audio_hop_length

    def mask_videos(self, videos: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
        """Black out the masked object: `video * (mask == 0)` per pair, the mask broadcasting over channels."""
        if len(videos) != len(masks):
            raise InvalidRequestError(f"{len(videos)} videos but {len(masks)} masks: give one mask per video")
        out = []
        for i, (video, mask) in enumerate(zip(videos, masks)):
            if not isinstance(video, torch.Tensor) or not isinstance(mask, torch.Tensor):
                raise InvalidRequestError(
                    f"videos[{i}] / masks[{i}] must be tensors (video (N, 3, H, W) uint8, mask (N, 1, H, W)); "
                    "decoding video files is not supported: decode frames yourself"
                )
            try:
                out.append(video * (mask == 0))
            except RuntimeError as e:
                raise InvalidRequestError(
                    f"masks[{i}] of shape {tuple(mask.shape)} does not broadcast over videos[{i}] of shape "
                    f"{tuple(video.shape)}: give (N, 1, H, W) with the video's N, H, W"
                ) from e
        return out

    def _load(self, audio: AudioInput, where: str) -> torch.Tensor:
        """-> (channels, L) at the processor's rate."""
        if isinstance(audio, (str, os.PathLike)):
            wav = _load_audio_file(audio, self.audio_sampling_rate)
            where = f"{where} ({os.fspath(audio)!r})"
        elif isinstance(audio, torch.Tensor):
            wav = audio  # used as given: it must already be at audio_sampling_rate
        else:
            raise InvalidAudioError(
                f"{where} is a {type(audio).__name__}: give a (channels, samples) float tensor at "
                f"{self.audio_sampling_rate} Hz or a file path"
            )
        _check_audio(wav, where, self.audio_hop_length, self.audio_sampling_rate)
        return wav

    def _select_frames(self, video: torch.Tensor, frames: int, where: str) -> torch.Tensor:
        """N frames assumed to span the item evenly -> exactly `frames` of them (nearest, half to even)."""
        if not isinstance(video, torch.Tensor):
            raise InvalidRequestError(
                f"{where} is a {type(video).__name__}: give a (N, 3, H, W) uint8 tensor (video files are not supported)"
            )
        if video.dim() != 4 or video.size(1) != 3 or video.size(0) == 0:
            raise InvalidRequestError(
                f"{where} has shape {tuple(video.shape)} but must be (N, 3, H, W) with N >= 1 RGB frames"
            )
        idx = torch.linspace(0, video.size(0) - 1, frames).round().long()  # (frames,) float32 linspace
        return video[idx.to(video.device)]  # (frames, 3, H, W)

    def __call__(
        self,
        descriptions: list[str],
        audios: list[AudioInput],
        anchors: list[list[Anchor]] | None = None,
        masked_videos: list[torch.Tensor] | None = None,
    ) -> Batch:
        """One item per description: audios are (channels, samples) float tensors at the processor's rate
        (used as given, channels averaged) or file paths (read, resampled, averaged)."""
        for name, value in (("descriptions", descriptions), ("audios", audios)):
            if isinstance(value, (str, bytes, torch.Tensor)) or not isinstance(value, Sequence):
                raise InvalidRequestError(f"{name} must be a list (one entry per item), got {type(value).__name__}")
        if len(audios) == 0:
            raise InvalidRequestError("no audios given: pass at least one item")
        if len(descriptions) != len(audios):
            raise InvalidRequestError(
                f"{len(descriptions)} descriptions but {len(audios)} audios: give one description per audio "
                '("" for none)'
            )
        for i, d in enumerate(descriptions):
            if not isinstance(d, str):
                raise InvalidRequestError(f"descriptions[{i}] is a {type(d).__name__}, not a str")
        if anchors is not None and (not isinstance(anchors, Sequence) or len(anchors) != len(audios)):
            got = len(anchors) if isinstance(anchors, Sequence) else type(anchors).__name__
            raise InvalidRequestError(
                f"{got} anchor lists for {len(audios)} audios: give one list per item ([] for none), or None"
            )
        if masked_videos is not None and len(masked_videos) != len(audios):
            raise InvalidRequestError(f"{len(masked_videos)} masked videos for {len(audios)} audios: give one per item")

        mono = [self._load(a, f"audios[{i}]").mean(0) for i, a in enumerate(audios)]  # B x (L_i,)
        dtypes, devices = {w.dtype for w in mono}, {w.device for w in mono}
        if len(dtypes) > 1 or len(devices) > 1:
            raise InvalidAudioError(
                f"audios differ in dtype {sorted(map(str, dtypes))} or device {sorted(map(str, devices))}: "
                "give them all the same dtype and device (files load as float32 on CPU)"
            )
        wav_sizes = torch.tensor([w.shape[0] for w in mono], dtype=torch.long)  # (B,)
        audios_t = torch.nn.utils.rnn.pad_sequence(mono, batch_first=True)[:, None]  # (B, 1, Lmax)
        sizes = self.wav_to_feature_idx(wav_sizes)  # (B,) float32
        audio_pad_mask = mask_from_sizes(sizes)  # (B, T)

        masked_video = None
        if masked_videos is not None:
            masked_video = [
                self._select_frames(v, int(sizes[i]), f"masked_videos[{i}]") for i, v in enumerate(masked_videos)
            ]
        return Batch(
            audios=audios_t,
            sizes=sizes,
            wav_sizes=wav_sizes,
            descriptions=list(descriptions),
            hop_length=self.audio_hop_length,
            audio_sampling_rate=self.audio_sampling_rate,
            anchors=anchors,
            audio_pad_mask=audio_pad_mask,
            masked_video=masked_video,
        )
