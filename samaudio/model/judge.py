"""The SAM-Audio Judge: scores a separated stem against its mixture and description (official model/judge.py).

Four scores per row, on the raters' scale: overall, recall, precision, faithfulness. The judge re-ranks
separation candidates (the ranking package wraps it) and serves as a quality metric.

Legend:
    N   rows (mixture, separated, description)    L   samples at 48 kHz, padded to a multiple of hop
    T   codec frames, L / hop                     C   codec latent channels (codebook_dim)
    H   transformer hidden                        Hf  finetune_transformer hidden
    Ht  ModernBERT hidden                         Db  bottleneck_dim          S   text tokens

Forward:
    t = text_proj1(ModernBERT(text).hidden_states[nth_text_layer][:, 0])        (N, H)
    h = transformer(data_proj(codec(cat([mixture, separated]))))               (2N, T, H)  unmasked
    a = cat_audio_proj(cat([h_separated, h_mixture]))                          (N, T, Db)
    z = proj_audio_and_text(cat([a, layer_norm(text_proj2(t))]))               (N, T, Db)
    r = head(finetune_transformer(finetune_data_proj(z)))                      (N, T, 4)
    scores = masked mean of r over valid frames * std + mean                   (N, 4)

Quirk kept for parity: the official judge hands its frame mask to both PE-AV transformers as `padding_mask=`,
a keyword their forward swallows, so both run unmasked; the mask only selects the frames of the final mean.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from samaudio.errors import ConfigError, InvalidAudioError, InvalidRequestError
from samaudio.model.codec import DACVAE
from samaudio.model.config import SAMAudioJudgeConfig
from samaudio.model.hub import CONFIG_NAME, check_state_dict, load_weights, resolve_folder
from samaudio.model.pe_av import PEAVTransformer
from samaudio.model.text_tower import build_modernbert, has_tokenizer, load_tokenizer, pooled_text_feature, tokenize

logger = logging.getLogger(__name__)

JUDGE_ID = "facebook/sam-audio-judge"
JUDGE_REVISION = "sam_audio"  # the official loader's hub revision for config.json and checkpoint.pt
TOKENIZER_PATTERNS = ("tokenizer*", "special_tokens_map.json", "vocab*", "merges.txt")
SCORE_NAMES = ("overall", "recall", "precision", "faithfulness")  # the head's column order


@dataclass
class JudgeOutput:
    overall: torch.Tensor  # (N, 1)
    recall: torch.Tensor  # (N, 1)
    precision: torch.Tensor  # (N, 1)
    faithfulness: torch.Tensor  # (N, 1)


def _resolve_judge(name_or_path: str | os.PathLike, revision: str | None, **hub) -> Path:
    if revision is None and str(name_or_path) == JUDGE_ID:
        revision = JUDGE_REVISION
    folder = resolve_folder(name_or_path, revision=revision, extra_patterns=TOKENIZER_PATTERNS, **hub)
    if not has_tokenizer(folder) and not Path(name_or_path).expanduser().is_dir():
        # the official processor reads the tokenizer from the repo's main branch, not the weights' revision
        folder_main = resolve_folder(name_or_path, config_only=True, extra_patterns=TOKENIZER_PATTERNS, **hub)
        return folder_main if has_tokenizer(folder_main) else folder
    return folder


def read_judge_config(folder: Path) -> SAMAudioJudgeConfig:
    """config.json -> SAMAudioJudgeConfig; a config of another layout is a ConfigError saying which to load."""
    fields = json.loads((folder / CONFIG_NAME).read_text())
    if "dac_vae_encoder" in fields:
        # official issues #46 / #87: the hub's other branch holds a judge in another layout (a TypeError there)
        raise ConfigError(
            f"{folder / CONFIG_NAME} has the key 'dac_vae_encoder': it describes the judge in another layout than "
            f"the sam-audio one this loader reads. Load {JUDGE_ID} at revision {JUDGE_REVISION!r} (the default for "
            "that id), or a folder whose config.json has audio_codec, transformer, finetune_transformer, "
            "text_model, nth_text_layer and bottleneck_dim"
        )
    return SAMAudioJudgeConfig.from_dict(fields)


class SAMAudioJudgeModel(nn.Module):
    def __init__(self, config: SAMAudioJudgeConfig):
        super().__init__()
        self.config = config
        C = config.audio_codec.codebook_dim
        H, Hf, Db = config.transformer.hidden_size, config.finetune_transformer.hidden_size, config.bottleneck_dim
        Ht = int(config.text_model.get("hidden_size", 768))
        # attribute order = official state_dict order
        self.mean = nn.Parameter(torch.zeros(4))  # score de-normalisation; the checkpoint carries the values
        self.std = nn.Parameter(torch.ones(4))
        self.data_proj = nn.Linear(C, H)
        self.audio_codec = DACVAE(config.audio_codec, decoder=False)  # the official judge drops the decoder
        self.transformer = PEAVTransformer(config.transformer)
        self.finetune_transformer = PEAVTransformer(config.finetune_transformer)
        self.text_model = build_modernbert(config.text_model, "judge text_model")
        self.cat_audio_proj = nn.Linear(2 * H, Db)
        self.text_proj1 = nn.Linear(Ht, H, bias=False)
        self.text_proj2 = nn.Linear(H, Db)
        self.layer_norm = nn.LayerNorm(Db)
        self.proj_audio_and_text = nn.Linear(2 * Db, Db)
        self.finetune_data_proj = nn.Linear(Db, Hf)
        self.head = nn.Linear(Hf, 4, bias=False)

    @property
    def hop_length(self) -> int:
        return self.audio_codec.hop_length

    @property
    def sample_rate(self) -> int:
        return self.audio_codec.sample_rate

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        input_values: torch.Tensor,
        separated_values: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> JudgeOutput:
        """Processor outputs -> the four scores. Unknown keywords are ignored, as the official forward does."""
        N = input_values.shape[0]
        if separated_values.shape != input_values.shape or input_ids.shape[0] != N:
            raise InvalidRequestError(
                f"the judge got {N} mixtures {tuple(input_values.shape)}, separated audio "
                f"{tuple(separated_values.shape)} and {input_ids.shape[0]} descriptions: give one of each per row, "
                "as SAMAudioJudgeProcessor makes them"
            )
        _, pooled = pooled_text_feature(self.text_model, input_ids, attention_mask, self.config.nth_text_layer)
        t = self.text_proj1(pooled)  # (N, H)

        wav = torch.cat([input_values, separated_values], dim=0)  # (2N, 1, L): mixtures first
        with torch.no_grad():
            z = self.audio_codec(wav)  # (2N, C, T)
        h, _ = self.transformer(self.data_proj(z.transpose(1, 2)))  # (2N, T, H), unmasked (see module doc)
        inp, hyp = h[:N], h[N:]
        a = self.cat_audio_proj(torch.cat([hyp, inp], dim=-1))  # (N, T, Db): separated first
        u = self.layer_norm(self.text_proj2(t))  # (N, Db)
        z = self.proj_audio_and_text(torch.cat([a, u[:, None].expand_as(a)], dim=-1))  # (N, T, Db)
        f, _ = self.finetune_transformer(self.finetune_data_proj(z))  # (N, T, Hf), unmasked
        r = self.head(f)  # (N, T, 4)

        if padding_mask is None:
            p = r.mean(dim=1)  # (N, 4)
        else:
            m = padding_mask[:, :: self.hop_length].to(r.dtype)[:, : r.shape[1], None]  # (N, T, 1)
            p = (r * m).sum(dim=1) / m.sum(dim=1)  # (N, 4)
        s = p * self.std + self.mean
        return JudgeOutput(*(s[:, i : i + 1] for i in range(4)))

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = JUDGE_ID,
        revision: str | None = None,
        device: str | torch.device | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        token: str | None = None,
    ) -> "SAMAudioJudgeModel":
        """Load `facebook/sam-audio-judge` (hub revision "sam_audio") or a folder with config.json and weights.

        Weights are `model.safetensors` or the official `checkpoint.pt` (read with weights_only=True). Keys and
        shapes are checked against the config before loading: a config that does not fit its weights is one
        CheckpointError naming the offending keys, not a crash inside a forward pass.
        """
        folder = _resolve_judge(name_or_path, revision, cache_dir=cache_dir, token=token)
        config = read_judge_config(folder)
        model = cls(config)
        model.load_checkpoint(load_weights(folder), where=str(folder))
        return model.eval().to(device)

    def load_checkpoint(self, state: dict[str, torch.Tensor], where: str = "judge checkpoint") -> None:
        check_state_dict(
            state,
            self.state_dict(),
            f"the judge checkpoint in {where}",
            "Is config.json the one saved with these weights (sizes of transformer, finetune_transformer, "
            "text_model, audio_codec, bottleneck_dim)?",
        )
        self.load_state_dict(state, strict=True)
        logger.info("loaded %d judge tensors from %s", len(state), where)


class SAMAudioJudgeProcessor:
    """Descriptions and (mixture, separated) audio pairs -> the judge's inputs. Holds no weights.

    Each waveform is reflect-padded at its end to a multiple of the hop (not when already one), then all are
    zero-padded to the longest; `padding_mask` is True up to the end of the reflection.
    """

    def __init__(self, tokenizer, hop_length: int = 1920, sampling_rate: int = 48000):
        self.tokenizer = tokenizer
        self.hop_length = hop_length
        self.sampling_rate = sampling_rate

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = JUDGE_ID,
        revision: str | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        token: str | None = None,
    ) -> "SAMAudioJudgeProcessor":
        folder = _resolve_judge(name_or_path, revision, cache_dir=cache_dir, token=token)
        config = read_judge_config(folder)
        return cls(load_tokenizer(folder), config.audio_codec.hop_length, config.audio_codec.sample_rate)

    def _audio(self, audio: torch.Tensor | str | os.PathLike, where: str) -> torch.Tensor:
        if isinstance(audio, (str, os.PathLike)):
            from samaudio.processor import _load_audio_file

            audio = _load_audio_file(audio, self.sampling_rate).mean(0, keepdim=True)  # mono, as the official
        if not isinstance(audio, torch.Tensor) or not audio.is_floating_point():
            raise InvalidAudioError(f"{where} must be a float tensor at {self.sampling_rate} Hz or a file path")
        if audio.dim() == 1:
            audio = audio[None]
        if audio.dim() != 2 or audio.shape[0] != 1:
            raise InvalidAudioError(f"{where} has shape {tuple(audio.shape)}; the judge takes mono (1, samples)")
        L = audio.shape[-1]
        pad = -L % self.hop_length
        if L == 0 or pad >= L:
            raise InvalidAudioError(
                f"{where} has {L} samples; the judge needs more than {self.hop_length // 2} to reflect-pad to a "
                f"multiple of {self.hop_length}"
            )
        return F.pad(audio[None], (0, pad), mode="reflect")[0] if pad else audio  # (1, ceil(L / hop) * hop)

    def _stack(self, audios: Sequence, where: str) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self._audio(a, f"{where}[{i}]") for i, a in enumerate(audios)]
        Lmax = max(r.shape[-1] for r in rows)
        values = torch.zeros(len(rows), 1, Lmax, dtype=rows[0].dtype)  # (N, 1, Lmax)
        mask = torch.zeros(len(rows), Lmax, dtype=torch.bool)  # (N, Lmax)
        for i, r in enumerate(rows):
            values[i, :, : r.shape[-1]] = r
            mask[i, : r.shape[-1]] = True
        return values, mask

    def __call__(
        self,
        text: list[str],
        input_audio: Sequence[torch.Tensor | str | os.PathLike],
        separated_audio: Sequence[torch.Tensor | str | os.PathLike],
        sampling_rate: int | None = None,
    ) -> dict[str, torch.Tensor]:
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise InvalidAudioError(
                f"the judge takes audio at {self.sampling_rate} Hz, got sampling_rate={sampling_rate}: resample first"
            )
        if not (len(text) == len(input_audio) == len(separated_audio)) or not text:
            raise InvalidRequestError(
                f"{len(text)} descriptions, {len(input_audio)} mixtures and {len(separated_audio)} separated "
                "stems: give one of each per row"
            )
        input_values, padding_mask = self._stack(input_audio, "input_audio")
        separated_values, _ = self._stack(separated_audio, "separated_audio")
        if separated_values.shape != input_values.shape:
            # the official processor pads both lists separately and would fail later inside the model
            raise InvalidRequestError(
                f"mixtures pad to {input_values.shape[-1]} samples but separated stems to "
                f"{separated_values.shape[-1]}: give pairs of equal length"
            )
        return {
            **tokenize(self.tokenizer, text),
            "input_values": input_values,  # (N, 1, Lmax)
            "padding_mask": padding_mask,  # (N, Lmax)
            "separated_values": separated_values,  # (N, 1, Lmax); its mask is discarded, as the official one
        }

