"""LAION-CLAP (HTSAT-tiny audio tower, RoBERTa text tower) and the CLAP ranker (official sam_audio/ranking/clap.py).

Legend: N audio rows (B*K), B descriptions, L samples, Tm mel frames (1001 for 10 s), M mel bins (64),
S spectrogram image side (256), E HTSAT embed dim, J joint embedding dim, S_t text tokens (77).

Built from our own code rather than the `laion-clap` package: that package pins numpy < 2 and pulls in wandb,
pandas, scikit-learn and numba, downloads `roberta-base` whenever a model is constructed, and hard-codes the
HTSAT-tiny sizes and a 768-wide text projection, so it can neither sit beside this project's dependencies nor
build another size. Module and parameter names are laion_clap's, so `630k-best.pt` loads unchanged.

score[b, k] = normalize(audio_projection(HTSAT(wav[b*K+k])))  .  normalize(text_projection(RoBERTa pooler(text[b])))
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from samaudio.errors import CheckpointError, InvalidRequestError
from samaudio.ranking.config import ClapRankerConfig
from samaudio.ranking.ranker import Ranker, load_state_strict

logger = logging.getLogger(__name__)

CLAP_HUB_REPO = "lukewys/laion_clap"
CLAP_HUB_FILE = "630k-best.pt"
TEXT_TOKENIZER = "roberta-base"  # laion_clap's text tokenizer; a folder with tokenizer files beside the checkpoint wins
CLAP_RATE = 48000
MAX_SAMPLES = 480000  # 10 s: longer clips are cut to a random 10-s window, shorter ones repeated then zero-padded
CONTEXT_LENGTH = 77


@dataclass
class HTSATConfig:
    """HTSAT_Swin_Transformer sizes; defaults are laion_clap's HTSAT-tiny."""

    embed_dim: int = 96
    depths: list[int] = field(default_factory=lambda: [2, 2, 6, 2])
    num_heads: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    window_size: int = 8
    spec_size: int = 256
    patch_size: int = 4
    patch_stride: list[int] = field(default_factory=lambda: [4, 4])
    mlp_ratio: float = 4.0


@dataclass
class ClapAudioConfig:
    """laion_clap `audio_cfg` of HTSAT-tiny (the front end)."""

    sample_rate: int = 48000
    window_size: int = 1024
    hop_size: int = 480
    mel_bins: int = 64
    fmin: float = 50
    fmax: float = 14000
    class_num: int = 527
    clip_samples: int = 480000
    audio_length: int = 1024
    model_type: str = "HTSAT"
    model_name: str = "tiny"


# transformers RobertaConfig fields of roberta-base (laion_clap loads it with RobertaModel.from_pretrained)
ROBERTA_BASE = dict(
    vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
    eos_token_id=2, hidden_act="gelu",
)


@dataclass
class ClapConfig:
    """The whole CLAP model: laion_clap's `model_cfg` (embed_dim, joint_embed_shape, audio_cfg), HTSAT sizes and
    the RoBERTa config. The released model is the default; `config.json` beside a checkpoint may give others."""

    htsat: HTSATConfig = field(default_factory=HTSATConfig)
    audio_cfg: ClapAudioConfig = field(default_factory=ClapAudioConfig)
    embed_dim: int = 768  # HTSAT output width: embed_dim * 2 ** (stages - 1)
    joint_embed_shape: int = 512
    roberta: dict[str, Any] = field(default_factory=lambda: dict(ROBERTA_BASE))

    @classmethod
    def from_file(cls, path: Path) -> "ClapConfig":
        data = json.loads(path.read_text())
        model_cfg = data.get("model_cfg", {})
        audio = {k: v for k, v in model_cfg.get("audio_cfg", {}).items() if k in ClapAudioConfig.__dataclass_fields__}
        return cls(
            htsat=HTSATConfig(**data.get("htsat", {})),
            audio_cfg=ClapAudioConfig(**audio),
            embed_dim=model_cfg.get("embed_dim", 768),
            joint_embed_shape=model_cfg.get("joint_embed_shape", 512),
            roberta=data.get("roberta", dict(ROBERTA_BASE)),
        )


# ---------------------------------------------------------------------------------------------- front end


class STFT(nn.Module):
    """torchlibrosa's conv STFT: windowed DFT kernels stored as weights (they are in the checkpoint)."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        bins = n_fft // 2 + 1
        self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)  # names: checkpoint keys
        self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = F.pad(wav[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode="reflect")  # center=True
        real, imag = self.conv_real(x), self.conv_imag(x)  # (N, bins, Tm)
        return (real**2 + imag**2).transpose(1, 2)[:, None]  # (N, 1, Tm, bins) power spectrogram


class Spectrogram(nn.Module):
    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.stft = STFT(n_fft, hop)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.stft(wav)


class LogmelFilterBank(nn.Module):
    """Mel projection and power_to_db with ref 1.0, amin 1e-10, no top_db (torchlibrosa's settings in HTSAT)."""

    def __init__(self, n_fft: int, n_mels: int):
        super().__init__()
        self.melW = nn.Parameter(torch.zeros(n_fft // 2 + 1, n_mels), requires_grad=False)  # in the checkpoint

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(spec, self.melW)  # (N, 1, Tm, M)
        return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))  # - 10 log10(max(amin, ref)) = 0


# ---------------------------------------------------------------------------------------------- Swin blocks


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    B, H, W, C = x.shape
    x = x.view(B, H // w, w, W // w, w, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, w, w, C)  # (B * nW, w, w, C)


def window_reverse(windows: torch.Tensor, w: int, H: int, W: int) -> torch.Tensor:
    B = windows.shape[0] // ((H // w) * (W // w))
    x = windows.view(B, H // w, W // w, w, w, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, -1)


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, stride: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=stride, padding=(patch - stride) // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))  # (N, H*W, E)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (w*w, w*w, 2)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1])  # a key
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        Bw, P, C = x.shape
        qkv = self.qkv(x).reshape(Bw, P, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]  # (Bw, nh, P, hs)
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(P, P, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = (attn.view(Bw // nW, nW, self.heads, P, P) + mask[None, :, None]).view(-1, self.heads, P, P)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(Bw, P, C)
        return self.proj(x)


def shifted_window_mask(H: int, W: int, window: int, shift: int) -> torch.Tensor:
    """(nW, w*w, w*w) additive mask (0 / -100) that keeps shifted windows from mixing regions (Swin)."""
    img = torch.zeros(1, H, W, 1)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for h in cuts:
        for w in cuts:
            img[:, h, w, :] = count
            count += 1
    windows = window_partition(img, window).view(-1, window * window)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], heads: int, window: int, shift: int, mlp_ratio: float):
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= window:  # the whole map fits one window: no partition, no shift
            window, shift = min(resolution), 0
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # a persistent buffer because laion_clap saves it (the checkpoint holds it)
        self.register_buffer("attn_mask", shifted_window_mask(*resolution, window, shift) if shift else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.resolution
        B, L, C = x.shape
        h = self.norm1(x).view(B, H, W, C)
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(h, self.window).view(-1, self.window * self.window, C)
        windows = self.attn(windows, self.attn_mask).view(-1, self.window, self.window, C)
        h = window_reverse(windows, self.window, H, W)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + h.reshape(B, H * W, C)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, resolution: tuple[int, int], dim: int):
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.resolution
        B, L, C = x.shape
        x = x.view(B, H, W, C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(B, -1, 4 * C)))  # (B, H/2*W/2, 2C)


class BasicLayer(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, heads: int, window: int, mlp_ratio: float,
                 downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio)
            for i in range(depth)
        )
        self.downsample = PatchMerging(resolution, dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class HTSAT(nn.Module):
    """HTSAT_Swin_Transformer without fusion, as far as its clip `embedding` (the only output CLAP uses)."""

    def __init__(self, cfg: HTSATConfig, audio: ClapAudioConfig):
        super().__init__()
        self.cfg = cfg
        self.freq_ratio = cfg.spec_size // audio.mel_bins  # the (Tm, M) map is folded into an S x S image
        self.mel_bins = audio.mel_bins
        self.spectrogram_extractor = Spectrogram(audio.window_size, audio.hop_size)
        self.logmel_extractor = LogmelFilterBank(audio.window_size, audio.mel_bins)
        self.bn0 = nn.BatchNorm2d(audio.mel_bins)
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.patch_stride[0], cfg.embed_dim)
        grid = cfg.spec_size // cfg.patch_stride[0]
        n = len(cfg.depths)
        self.layers = nn.ModuleList(
            BasicLayer(
                cfg.embed_dim * 2**i, (grid // 2**i, grid // 2**i), cfg.depths[i], cfg.num_heads[i],
                cfg.window_size, cfg.mlp_ratio, downsample=i < n - 1,
            )
            for i in range(n)
        )
        self.num_features = cfg.embed_dim * 2 ** (n - 1)
        self.norm = nn.LayerNorm(self.num_features)
        # the classification head: in the checkpoint, not used for the embedding
        sf = cfg.spec_size // 2 ** (n - 1) // cfg.patch_stride[0] // self.freq_ratio
        self.tscam_conv = nn.Conv2d(self.num_features, audio.class_num, kernel_size=(sf, 3), padding=(0, 1))
        self.head = nn.Linear(audio.class_num, audio.class_num)

    def logmel(self, wav: torch.Tensor) -> torch.Tensor:
        """(N, L) waveforms -> (N, 1, Tm, M) log-mel spectrograms (before bn0)."""
        return self.logmel_extractor(self.spectrogram_extractor(wav))

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, Tm, M) -> (N, 1, S, S): stretch time to S * freq_ratio (bicubic), fold it into freq_ratio bands."""
        N, _, T, M = x.shape
        target_t = self.cfg.spec_size * self.freq_ratio
        if T < target_t:
            x = F.interpolate(x, (target_t, M), mode="bicubic", align_corners=True)
        x = x.permute(0, 1, 3, 2)  # (N, 1, M, S*r)
        x = x.reshape(N, 1, M, self.freq_ratio, -1).permute(0, 1, 3, 2, 4)  # (N, 1, r, M, S)
        return x.reshape(N, 1, self.freq_ratio * M, -1)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(N, L) waveforms -> (N, E') clip embeddings (`output_dict["embedding"]`)."""
        x = self.logmel(wav)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # normalise per mel bin
        x = self.to_image(x)
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return x.mean(dim=1)  # (N, C): the average over the final side x side map (laion_clap's latent_output)


class MLPLayers(nn.Module):
    """laion_clap's audio_transform / text_transform: trained, saved, never used for embeddings."""

    def __init__(self, dim: int):
        super().__init__()
        self.sequential = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(0.1), nn.Linear(dim, dim))


def _projection(width: int, joint: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, joint), nn.ReLU(), nn.Linear(joint, joint))


class CLAP(nn.Module):
    """laion_clap `CLAP` (no fusion) with HTSAT audio and RoBERTa text: the module `630k-best.pt` holds."""

    def __init__(self, cfg: ClapConfig):
        super().__init__()
        from transformers import RobertaConfig, RobertaModel

        self.cfg = cfg
        J = cfg.joint_embed_shape
        self.audio_branch = HTSAT(cfg.htsat, cfg.audio_cfg)
        self.text_branch = RobertaModel(RobertaConfig(**cfg.roberta))
        self.text_transform = MLPLayers(J)
        self.text_projection = _projection(self.text_branch.config.hidden_size, J)
        self.audio_transform = MLPLayers(J)
        self.audio_projection = _projection(cfg.embed_dim, J)
        self.logit_scale_a = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.logit_scale_t = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def audio_embedding(self, wav: torch.Tensor) -> torch.Tensor:
        """(N, 480000) prepared waveforms -> (N, J) L2-normalised."""
        return F.normalize(self.audio_projection(self.audio_branch(wav)), dim=-1)

    def text_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, S_t) tokens -> (B, J) L2-normalised (RoBERTa pooler: dense + tanh of <s>)."""
        pooled = self.text_branch(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return F.normalize(self.text_projection(pooled), dim=-1)


def quantize_int16(x: torch.Tensor) -> torch.Tensor:
    """laion_clap's float32 -> int16 -> float32 round trip: clamp to [-1, 1], scale, truncate toward zero."""
    return (x.clamp(-1.0, 1.0) * 32767.0).to(torch.int16).float() / 32767.0


def fit_clip(wav: torch.Tensor, max_len: int = MAX_SAMPLES, generator: torch.Generator | None = None) -> torch.Tensor:
    """One (L,) waveform to exactly `max_len` samples: a random window if longer ("rand_trunc"), else whole
    copies of it followed by zeros ("repeatpad")."""
    L = wav.shape[-1]
    if L > max_len:
        start = int(torch.randint(0, L - max_len + 1, (1,), generator=generator))
        return wav[start : start + max_len]
    if L < max_len:
        wav = wav.repeat(max_len // L)
        wav = F.pad(wav, (0, max_len - wav.shape[-1]))
    return wav


def _read_clap_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or truncated files raise many different types
        raise CheckpointError(f"cannot read CLAP checkpoint {path}: {type(e).__name__}: {e}") from e
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path} holds no CLAP state_dict (expected a dict with a 'state_dict' entry)")
    if next(iter(state)).startswith("module."):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    state.pop("text_branch.embeddings.position_ids", None)  # a buffer older transformers saved; ours rebuilds it
    return state


class ClapRanker(Ranker):
    """Cosine similarity of each candidate's CLAP audio embedding with its item's description embedding: (B, K)."""

    def __init__(
        self,
        config: ClapRankerConfig | None = None,
        *,
        root: str | Path | None = None,
        model: CLAP | None = None,
        tokenizer: Any = None,
    ):
        """Load the checkpoint `config` names (relative paths from `root`), or wrap a built `model` and
        `tokenizer` as they are (random weights for a benchmark, or weights loaded elsewhere)."""
        super().__init__()
        from transformers import AutoTokenizer

        self.config = config or ClapRankerConfig()
        if model is not None:
            if tokenizer is None:
                raise InvalidRequestError("ClapRanker(model=...) needs its tokenizer too (tokenizer=...)")
            self.model, self.tokenizer = model.eval(), tokenizer
            return
        path = self._checkpoint_path(self.config.checkpoint, root)
        # our extension: a config.json beside the checkpoint gives other sizes (the official code hard-codes them)
        cfg_file = path.parent / "config.json"
        cfg = ClapConfig.from_file(cfg_file) if cfg_file.is_file() and cfg_file != path else ClapConfig()
        self.model = CLAP(cfg)
        load_state_strict(self.model, _read_clap_checkpoint(path), f"CLAP checkpoint {path}")
        self.model.eval()
        local_tokenizer = (path.parent / "tokenizer.json").is_file() or (path.parent / "vocab.json").is_file()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path.parent) if local_tokenizer else TEXT_TOKENIZER)

    @staticmethod
    def _checkpoint_path(checkpoint: str | None, root: str | Path | None) -> Path:
        if checkpoint is None:
            from samaudio.model.hub import download_file

            return download_file(CLAP_HUB_REPO, CLAP_HUB_FILE)
        path = Path(checkpoint).expanduser()
        if not path.is_absolute() and root is not None:
            path = Path(root) / path  # relative to the folder of the config that names it (as "name": "t5")
        if not path.is_file():
            raise CheckpointError(f"no CLAP checkpoint at {path}")
        return path

    def prepare_audio(self, extracted_audio: list[torch.Tensor], sample_rate: int) -> torch.Tensor:
        """B blocks (K, L_b) -> (N, 480000) rows as HTSAT takes them (resampled, int16 round trip, fitted)."""
        rows = []
        for block in extracted_audio:
            block = block.float()
            if sample_rate != CLAP_RATE:
                import torchaudio

                block = torchaudio.functional.resample(block, sample_rate, CLAP_RATE)
            for row in quantize_int16(block):
                rows.append(fit_clip(row, self.model.cfg.audio_cfg.clip_samples))
        return torch.stack(rows).to(self.model.logit_scale_a.device)  # (N, 480000)

    def tokenize(self, descriptions: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            list(descriptions), padding="max_length", truncation=True, max_length=CONTEXT_LENGTH, return_tensors="pt"
        )
        device = self.model.logit_scale_a.device
        return {"input_ids": tokens["input_ids"].to(device), "attention_mask": tokens["attention_mask"].to(device)}

    @torch.inference_mode()
    def forward(
        self, extracted_audio: list[torch.Tensor], descriptions: list[str], sample_rate: int = CLAP_RATE, **kwargs: Any
    ) -> torch.Tensor:
        B = len(extracted_audio)
        if len(descriptions) != B:
            raise InvalidRequestError(f"{B} audio blocks but {len(descriptions)} descriptions: give one per item")
        audio = self.model.audio_embedding(self.prepare_audio(extracted_audio, sample_rate))  # (N, J)
        text = self.model.text_embedding(**self.tokenize(descriptions))  # (B, J)
        K = audio.shape[0] // B
        return (audio.view(B, K, -1) @ text.view(B, -1, 1)).squeeze(-1)  # (B, K)
