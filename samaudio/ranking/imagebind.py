"""ImageBind's audio and vision towers and the ImageBind ranker (official sam_audio/ranking/imagebind.py).

Legend: B items, K candidates, N = B*K audio rows, F video frames, D tower width, E joint embedding dim (1024 huge).

score[b, k] = normalize(audio_emb(cand[b, k])) . normalize(video_emb(video[b]))   shape (B, K, 1), as officially

Only the two towers the ranker uses are built (ImageBind huge also carries text, depth, thermal and IMU towers,
about a third of its 1.2 B parameters); their weights in the checkpoint are set aside. Module and parameter
names are ImageBind's, so `imagebind_huge.pth` loads unchanged. Pre-processing follows the official ranker with
ImageBind's `waveform2melspec` and pytorchvideo's clip sampler, transforms and crops, including two quirks:
clip starts are exact `Fraction`s of the float duration, and each audio clip's mean is subtracted in place from
the one resampled waveform the clips are views of (overlapping clips see earlier subtractions).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from samaudio.errors import CheckpointError, InvalidRequestError, InvalidVideoError
from samaudio.ranking.config import ImageBindRankerConfig
from samaudio.ranking.ranker import Ranker, load_state_strict

IMAGEBIND_HUGE_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
TOWERS = ("vision", "audio")  # the modalities the ranker uses, in checkpoint order

AUDIO_RATE = 16000
AUDIO_CLIPS, VIDEO_CLIPS, CLIP_SECONDS = 3, 5, 2
MEL_BINS, MEL_FRAMES = 128, 204
MEL_MEAN, MEL_STD = -4.268, 9.138
CROP = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ImageBindConfig:
    """`ImageBindModel` constructor arguments for the two towers; defaults are `imagebind_huge()`'s."""

    out_embed_dim: int = 1024
    vision_embed_dim: int = 1280
    vision_num_blocks: int = 32
    vision_num_heads: int = 16
    audio_embed_dim: int = 768
    audio_num_blocks: int = 12
    audio_num_heads: int = 12
    video_frames: int = 2
    kernel_size: tuple[int, int, int] = (2, 14, 14)
    audio_kernel_size: int = 16
    audio_stride: int = 10
    audio_num_mel_bins: int = MEL_BINS
    audio_target_len: int = MEL_FRAMES

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> "ImageBindConfig":
        """From ImageBindModel kwargs (other towers' sizes ignored: those towers are not built)."""
        known = cls.__dataclass_fields__
        return cls(**{k: tuple(v) if k == "kernel_size" else v for k, v in kwargs.items() if k in known})


# ---------------------------------------------------------------------------------------------- towers


class PadIm2Video(nn.Module):
    """Images (B, 3, H, W) become 2-frame videos by repetition; videos pass through."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)
        return x.repeat(1, 1, 2, 1, 1) if x.shape[2] == 1 else x


class PatchEmbed(nn.Module):
    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None = None):
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)  # (B, P, D)
        return x if self.norm_layer is None else self.norm_layer(x)


class PosEmbedding(nn.Module):
    def __init__(self, tokens: int, dim: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))


class Preprocessor(nn.Module):
    """Patch stem, a CLS token and learned positions (ImageBind's RGBDTPreprocessor / AudioPreprocessor)."""

    def __init__(self, stem: PatchEmbed, patches: int, dim: int):
        super().__init__()
        self.rgbt_stem = stem
        self.pos_embedding_helper = PosEmbedding(patches + 1, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.rgbt_stem(x)  # (B, P, D)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.pos_embedding_helper.pos_embed  # (B, 1 + P, D)


class Mlp(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, bias_kv: bool):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, bias=True, add_bias_kv=bias_kv)  # (S, B, D) layout
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm_2(x))


class Trunk(nn.Module):
    def __init__(self, dim: int, blocks: int, heads: int, pre_ln: bool, bias_kv: bool):
        super().__init__()
        # index 1 of the official Sequential is a parameter-free (B, S, D) -> (S, B, D) rearrange
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(dim, eps=1e-6) if pre_ln else nn.Identity())
        self.blocks = nn.Sequential(*(Block(dim, heads, bias_kv) for _ in range(blocks)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.pre_transformer_layer(tokens).transpose(0, 1)  # (S, B, D)
        return self.blocks(x).transpose(0, 1)  # (B, S, D)


class SelectCLS(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


class LogitScale(nn.Module):
    """ImageBind's fixed LearnableLogitScaling(learnable=False): x * min(exp(log_scale), 100)."""

    def __init__(self, scale: float):
        super().__init__()
        self.register_buffer("log_logit_scale", torch.tensor(math.log(scale)))  # a key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clip(self.log_logit_scale.exp(), max=100) * x


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, p=2)


class ImageBindAV(nn.Module):
    """`ImageBindModel` restricted to its vision and audio towers (same submodule names)."""

    def __init__(self, cfg: ImageBindConfig):
        super().__init__()
        self.cfg = cfg
        Dv, Da, E = cfg.vision_embed_dim, cfg.audio_embed_dim, cfg.out_embed_dim
        kt, kh, kw = cfg.kernel_size
        vision_patches = (cfg.video_frames // kt) * (CROP // kh) * (CROP // kw)
        audio_patches = ((cfg.audio_num_mel_bins - cfg.audio_kernel_size) // cfg.audio_stride + 1) * (
            (cfg.audio_target_len - cfg.audio_kernel_size) // cfg.audio_stride + 1
        )
        vision_stem = PatchEmbed(nn.Sequential(PadIm2Video(), nn.Conv3d(3, Dv, cfg.kernel_size, cfg.kernel_size, bias=False)))
        audio_stem = PatchEmbed(
            nn.Conv2d(1, Da, cfg.audio_kernel_size, cfg.audio_stride, bias=False), nn.LayerNorm(Da)
        )
        self.modality_preprocessors = nn.ModuleDict(
            {"vision": Preprocessor(vision_stem, vision_patches, Dv), "audio": Preprocessor(audio_stem, audio_patches, Da)}
        )
        self.modality_trunks = nn.ModuleDict(
            {
                "vision": Trunk(Dv, cfg.vision_num_blocks, cfg.vision_num_heads, pre_ln=True, bias_kv=False),
                "audio": Trunk(Da, cfg.audio_num_blocks, cfg.audio_num_heads, pre_ln=False, bias_kv=True),
            }
        )
        self.modality_heads = nn.ModuleDict(
            {
                name: nn.Sequential(nn.LayerNorm(D, eps=1e-6), SelectCLS(), nn.Linear(D, E, bias=False))
                for name, D in (("vision", Dv), ("audio", Da))
            }
        )
        self.modality_postprocessors = nn.ModuleDict(
            {"vision": Normalize(), "audio": nn.Sequential(Normalize(), LogitScale(20.0))}
        )

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """(B, S, ...) clips or views -> (B, E): per-clip embeddings (normalised, scaled) averaged over S."""
        B, S = x.shape[:2]
        h = self.modality_preprocessors[modality](x.reshape(B * S, *x.shape[2:]))
        h = self.modality_heads[modality](self.modality_trunks[modality](h))
        return self.modality_postprocessors[modality](h).reshape(B, S, -1).mean(dim=1)


# ---------------------------------------------------------------------------------------------- inputs


def clip_times(duration: float, clips: int, clip_seconds: int = CLIP_SECONDS) -> list[tuple[Fraction, Fraction]]:
    """pytorchvideo ConstantClipsPerVideoSampler: `clips` windows evenly spaced from 0 to duration - clip.

    Starts are exact fractions of the float `duration - clip_seconds` (it is a float before Fraction sees it)."""
    latest = Fraction(max(duration - clip_seconds, 0))
    step = latest / max(clips - 1, 1)
    return [(step * i, step * i + clip_seconds) for i in range(clips)]


def audio_clips(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """One (L,) candidate -> (3, 1, 128, 204) normalised fbank clips (ImageBind `load_and_transform_audio_data`)."""
    import torchaudio
    from torchaudio.compliance import kaldi

    w = wav.float()[None]  # (1, L)
    if sample_rate != AUDIO_RATE:
        w = torchaudio.functional.resample(w, orig_freq=sample_rate, new_freq=AUDIO_RATE)
    else:
        w = w.clone()  # the in-place mean subtraction below must not touch the caller's tensor
    out = []
    for start, end in clip_times(w.shape[1] / AUDIO_RATE, AUDIO_CLIPS):
        clip = w[:, int(start * AUDIO_RATE) : int(end * AUDIO_RATE)]
        clip -= clip.mean()  # in place on the shared waveform, as waveform2melspec does (see module doc)
        fbank = kaldi.fbank(
            clip, htk_compat=True, sample_frequency=AUDIO_RATE, use_energy=False, window_type="hanning",
            num_mel_bins=MEL_BINS, dither=0.0, frame_length=25, frame_shift=10,
        ).transpose(0, 1)  # (128, frames)
        pad = MEL_FRAMES - fbank.shape[1]
        fbank = F.pad(fbank, (0, pad)) if pad > 0 else fbank[:, :MEL_FRAMES]
        out.append((fbank[None] - MEL_MEAN) / MEL_STD)
    return torch.stack(out)  # (3, 1, 128, 204)


def short_side_scale(x: torch.Tensor, size: int) -> torch.Tensor:
    """pytorchvideo ShortSideScale on (C, T, H, W): bilinear, the short side to `size`."""
    C, T, H, W = x.shape
    if W < H:
        new_h, new_w = int(math.floor(H / W * size)), size
    else:
        new_h, new_w = size, int(math.floor(W / H * size))
    return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)


def three_crops(x: torch.Tensor, size: int = CROP) -> list[torch.Tensor]:
    """ImageBind SpatialCrop(224, 3): first, centre and last square along the long side of (C, T, H, W)."""
    H, W = x.shape[2], x.shape[3]
    crops = []
    for idx in range(3):
        y, xo = int(math.ceil((H - size) / 2)), int(math.ceil((W - size) / 2))
        if H > W:
            y = 0 if idx == 0 else H - size if idx == 2 else y
        else:
            xo = 0 if idx == 0 else W - size if idx == 2 else xo
        crops.append(x[:, :, y : y + size, xo : xo + size])
    return crops


def video_views(video: torch.Tensor, duration: float) -> torch.Tensor:
    """One masked video (F, 3, H, W), 0-255, lasting `duration` s -> (15, 3, 2, 224, 224) normalised views.

    Five 2-s clips; in each, frames ceil(fps * start) .. ceil(fps * end) (clamped), of which 2 evenly spaced."""
    if video.ndim != 4 or video.shape[1] != 3:
        raise InvalidVideoError(f"a masked video has shape {tuple(video.shape)}; the ImageBind ranker takes (F, 3, H, W)")
    n = video.shape[0]
    fps = n / duration
    mean = torch.tensor(CLIP_MEAN, device=video.device)[:, None, None, None]
    std = torch.tensor(CLIP_STD, device=video.device)[:, None, None, None]
    views = []
    for start, end in clip_times(duration, VIDEO_CLIPS):
        idxs = torch.arange(min(math.ceil(fps * start), n - 1), min(math.ceil(fps * end), n))
        pick = torch.linspace(0, idxs.shape[0] - 1, CLIP_SECONDS).clamp(max=idxs.shape[0] - 1).long()
        clip = video[idxs[pick]].transpose(0, 1).float() / 255.0  # (3, 2, H, W)
        clip = (short_side_scale(clip, CROP) - mean) / std
        views.extend(three_crops(clip))
    return torch.stack(views)  # (15, 3, 2, 224, 224), clip-major


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or truncated files raise many different types
        raise CheckpointError(f"cannot read ImageBind checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold an ImageBind state_dict (a mapping of names to tensors)")
    return state


class ImageBindRanker(Ranker):
    def __init__(self, config: ImageBindRankerConfig | None = None, *, root: str | os.PathLike | None = None):
        super().__init__()
        self.config = config or ImageBindRankerConfig()
        cfg = ImageBindConfig()
        if self.config.checkpoint is None:
            state = torch.hub.load_state_dict_from_url(IMAGEBIND_HUGE_URL, map_location="cpu", weights_only=True)
            source = IMAGEBIND_HUGE_URL
        else:
            path = Path(self.config.checkpoint).expanduser()
            if not path.is_absolute() and root is not None:
                path = Path(root) / path
            if not path.is_file():
                raise CheckpointError(f"no ImageBind checkpoint at {path}")
            # our extension: config.json beside the checkpoint gives other sizes (official: always huge)
            cfg_file = path.parent / "config.json"
            if cfg_file.is_file():
                cfg = ImageBindConfig.from_kwargs(json.loads(cfg_file.read_text()).get("imagebind_model_kwargs", {}))
            state, source = _read_checkpoint(path), str(path)
        self.model = ImageBindAV(cfg)
        # the text, depth, thermal and IMU towers are not built: set their weights aside
        state = {k: v for k, v in state.items() if k.split(".")[1] in TOWERS}
        load_state_strict(self.model, state, f"ImageBind checkpoint {source}")
        self.model.eval()

    def prepare(
        self, extracted_audio: list[torch.Tensor], videos: list[torch.Tensor], sample_rate: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, 1, 128, 204) audio clips and (B, 15, 3, 2, 224, 224) video views, on the model's device."""
        device = self.model.modality_preprocessors["audio"].cls_token.device
        audio = torch.stack([audio_clips(row, sample_rate) for block in extracted_audio for row in block])
        durations = [block.shape[-1] / sample_rate for block in extracted_audio]
        video = torch.stack([video_views(v.to(device), d) for v, d in zip(videos, durations)])
        return audio.to(device), video

    @torch.inference_mode()
    def forward(
        self, extracted_audio: list[torch.Tensor], videos: list[torch.Tensor], sample_rate: int = 48000, **kwargs: Any
    ) -> torch.Tensor:
        B = len(extracted_audio)
        if videos is None or len(videos) != B:
            raise InvalidRequestError(f"{B} candidate blocks but {0 if videos is None else len(videos)} videos")
        audio, video = self.prepare(extracted_audio, videos, sample_rate)
        a = self.model.embed("audio", audio)  # (N, E)
        v = self.model.embed("vision", video)  # (B, E)
        a = a / (a**2).sum(dim=-1, keepdim=True) ** 0.5
        v = v / (v**2).sum(dim=-1, keepdim=True) ** 0.5
        K = a.shape[0] // B
        return a.view(B, K, -1) @ v.view(B, -1, 1)  # (B, K, 1), not squeezed: the official shape
