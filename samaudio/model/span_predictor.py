"""PE-A-Frame, the span predictor: where in the audio is the described sound? (perception_models PEAudioFrame)

`SAMAudio.separate(predict_spans=True)` asks it which latent frames match the description and turns each run of
active frames into a "+" span prompt (anchor). It scores SAM-Audio's own codec latents, so its DAC-VAE encoder
(present in the checkpoint, needed for a strict load) never runs.

Legend:
    B   items        T   codec frames (hop 1920 at 48 kHz, 25 per second)
    Ci  input width (the predictor's `codebook_dim`)      H   audio transformer hidden
    S   text tokens  Ht  ModernBERT hidden                Do  output_dim

Forward:
    a = audio_head(audio_transformer(data_proj(latents), mask))        (B, T, Do)
    e = text_head(ModernBERT(text).hidden_states[nth_text_layer][:, 0])  (B, Do)
    logits = (a . e) * logit_scale + logit_bias                         (B, T); active where sigmoid > threshold
Padded frames are scored too (the mask acts only inside the audio transformer), as in the official model.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from samaudio.errors import InvalidRequestError
from samaudio.model.config import PEAudioConfig, PEAudioFrameConfig
from samaudio.model.hub import CONFIG_NAME, check_state_dict, load_weights, resolve_folder
from samaudio.model.pe_av import PEAVTransformer
from samaudio.model.text_tower import build_modernbert, load_tokenizer, pooled_text_feature, tokenize

logger = logging.getLogger(__name__)

HUB_ORG = "facebook"  # a bare name such as "pe-a-frame-large" is a repo of this organisation
HUB_REVISION = "perception_models"  # the branch the official loader reads
TOKENIZER_PATTERNS = ("tokenizer*", "special_tokens_map.json", "vocab*", "merges.txt")
DEFAULT_THRESHOLD = 0.3  # SAM-Audio's predict_spans threshold on the frame probability (strict >)

Span = list[float]  # [start_seconds, end_seconds]


@dataclass
class PEAudioFrameOutput:
    text_hidden: torch.Tensor  # (B, S, Ht) hidden_states[nth_text_layer]
    text_pooled: torch.Tensor  # (B, Ht) its first token
    audio_hidden: torch.Tensor  # (B, T, H) audio transformer frames
    audio_pooled: torch.Tensor  # (B, H) its CLS output
    audio_embeds: torch.Tensor  # (B, T, Do)
    text_embeds: torch.Tensor  # (B, Do)
    logits: torch.Tensor  # (B, T)
    probs: torch.Tensor  # (B, T) sigmoid(logits)


class ContrastiveHead(nn.Module):
    """LayerNorm (eps 1e-6) then a bias-free Linear; no L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_dim, eps=1e-6)
        self.proj = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.layer_norm(x))


class DacVaeEncoder(nn.Module):
    """transformers' DacEncoder and a 1x1-conv VAE bottleneck. Kept for a strict load; SAM-Audio never runs it."""

    def __init__(self, fields: dict):
        super().__init__()
        from transformers import DacConfig
        from transformers.models.dac.modeling_dac import DacEncoder

        width = int(fields.get("codebook_size", 1024))  # perception_models sizes the encoder output by this field
        config = DacConfig(**{**fields, "hidden_size": width})
        self.encoder = DacEncoder(config)
        self.bottleneck = nn.Module()
        self.bottleneck.in_proj = nn.Conv1d(width, 2 * config.codebook_dim, 1)
        self.bottleneck.out_proj = nn.Conv1d(config.codebook_dim, width, 1)


class PEAudio(nn.Module):
    """The audio tower (`audio_model`)."""

    def __init__(self, config: PEAudioConfig):
        super().__init__()
        H = config.audio_transformer.hidden_size
        self.data_proj = nn.Linear(config.codebook_dim, H)
        self.dac_vae_encoder = DacVaeEncoder(config.dac_vae_encoder)
        self.audio_transformer = PEAVTransformer(config.audio_transformer)

    def forward(self, latents: torch.Tensor, padding_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.audio_transformer(self.data_proj(latents), attention_mask=padding_mask)


class PEAudioFrame(nn.Module):
    def __init__(self, config: PEAudioFrameConfig):
        super().__init__()
        self.config = config
        Ht = int(config.text_model.get("hidden_size", 768))
        H = config.audio_model.audio_transformer.hidden_size
        # attribute order = official state_dict order
        self.logit_scale = nn.Parameter(torch.zeros(1))  # raw: multiplied, not exponentiated
        self.logit_bias = nn.Parameter(torch.zeros(1))
        self.text_model = build_modernbert(config.text_model, "span predictor text_model")
        self.audio_model = PEAudio(config.audio_model)
        self.text_head = ContrastiveHead(Ht, config.output_dim)
        self.audio_head = ContrastiveHead(H, config.output_dim)

    @property
    def input_dim(self) -> int:
        """Width of the latents it scores (`codebook_dim`): SAM-Audio slices its audio features to this."""
        return self.config.audio_model.codebook_dim

    @property
    def hop_length(self) -> int:
        return int(math.prod(self.config.audio_model.dac_vae_encoder.get("downsampling_ratios", [2, 8, 10, 12])))

    @property
    def sample_rate(self) -> int:
        return int(self.config.audio_model.dac_vae_encoder.get("sampling_rate", 48000))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        input_features: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
    ) -> PEAudioFrameOutput:
        """Tokens (B, S) and latents (B, T, Ci) -> per-frame scores; `padding_mask` (B, T) True on valid frames."""
        if input_features.dim() != 3 or input_features.shape[-1] != self.input_dim:
            raise InvalidRequestError(
                f"the span predictor scores latents shaped (batch, frames, {self.input_dim}), got "
                f"{tuple(input_features.shape)}"
            )
        text_hidden, text_pooled = pooled_text_feature(
            self.text_model, input_ids, attention_mask, self.config.nth_text_layer
        )
        audio_hidden, audio_pooled = self.audio_model(input_features, padding_mask)  # (B, T, H), (B, H)
        a = self.audio_head(audio_hidden)  # (B, T, Do)
        e = self.text_head(text_pooled)  # (B, Do)
        logits = torch.einsum("btd,bd->bt", a, e) * self.logit_scale + self.logit_bias  # (B, T)
        return PEAudioFrameOutput(
            text_hidden=text_hidden,
            text_pooled=text_pooled,
            audio_hidden=audio_hidden,
            audio_pooled=audio_pooled,
            audio_embeds=a,
            text_embeds=e,
            logits=logits,
            probs=logits.sigmoid(),
        )

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = "pe-a-frame-large",
        revision: str | None = None,
        device: str | torch.device | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        token: str | None = None,
    ) -> "PEAudioFrame":
        """A folder (config.json + model.safetensors), a hub id, or a bare official name (`facebook/<name>`)."""
        folder = resolve_span_predictor(name_or_path, revision, cache_dir=cache_dir, token=token)
        config = PEAudioFrameConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text()))
        model = cls(config)
        model.load_checkpoint(load_weights(folder), where=str(folder))
        return model.eval().to(device)

    def load_checkpoint(self, state: dict[str, torch.Tensor], where: str = "span predictor checkpoint") -> None:
        check_state_dict(
            state,
            self.state_dict(),
            f"the span predictor checkpoint in {where}",
            "Is config.json the one saved with these weights (text_model, audio_model, output_dim)?",
        )
        self.load_state_dict(state, strict=True)
        logger.info("loaded %d span predictor tensors from %s", len(state), where)


def resolve_span_predictor(
    name_or_path: str | os.PathLike, revision: str | None = None, root: Path | None = None, **hub
) -> Path:
    """A folder (relative names first beside `root`, the SAM-Audio folder), else a hub repo.

    A bare name is an official repo, `facebook/<name>` at the "perception_models" revision, as the official
    `PEAudioFrame.from_config` reads it.
    """
    name = str(name_or_path)
    for candidate in ([Path(root) / name] if root is not None else []) + [Path(name).expanduser()]:
        if candidate.is_dir():
            return resolve_folder(candidate)
    repo_id = name if "/" in name else f"{HUB_ORG}/{name}"
    if revision is None and repo_id.startswith(f"{HUB_ORG}/"):
        revision = HUB_REVISION
    return resolve_folder(repo_id, revision=revision, extra_patterns=TOKENIZER_PATTERNS, **hub)


class PEAudioFrameTransform:
    """Descriptions -> the predictor's `input_ids`, `attention_mask` (its tokenizer, read from the same folder)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "PEAudioFrameTransform":
        return cls(load_tokenizer(folder))

    def __call__(self, text: list[str]) -> dict[str, torch.Tensor]:
        return tokenize(self.tokenizer, text)


def active_runs(active: torch.Tensor) -> list[list[tuple[int, int]]]:
    """(B, T) bool -> per item the runs [s, e) of consecutive True frames, in order."""
    B, T = active.shape
    edges = torch.zeros(B, T + 2, dtype=torch.bool, device=active.device)
    edges[:, 1:-1] = active
    change = edges[:, 1:] ^ edges[:, :-1]  # (B, T + 1): True where a run starts or ends
    runs = []
    for b in range(B):
        idx = change[b].nonzero().flatten().tolist()  # alternating start, end
        runs.append(list(zip(idx[0::2], idx[1::2])))
    return runs


def spans_from_activity(active: torch.Tensor, hop_length: int, sample_rate: int) -> list[list[Span]]:
    """(B, T) bool -> per item [start_s, end_s] of each active run.

    Seconds are computed as the official code does, `frame * hop / sample_rate` on an integer tensor (float32),
    so a span's frames, read back with ceil(t * sr / hop) in float64, can move one frame later (spec: spans.md).
    """
    spans = []
    for item in active_runs(active):
        if not item:
            spans.append([])
            continue
        frames = torch.tensor(item, dtype=torch.long)  # (n, 2)
        seconds = frames * hop_length / sample_rate  # float32
        spans.append(seconds.tolist())
    return spans


def anchors_from_spans(spans: list[list[Span]]) -> list[list[tuple[str, float, float]]]:
    """Each span becomes a "+" anchor, in order (later ones overwrite earlier ones in the alignment)."""
    return [[("+", start, end) for start, end in item] for item in spans]
