"""SAM-Audio configuration, field for field the official `SAMAudioConfig`.

A `config.json` holds exactly the keyword arguments of `SAMAudioConfig` (nested dicts for the parts), so
`SAMAudioConfig.from_dict(json.load(f))` reads an official file unchanged. Unlike the official classes these
are dataclasses: an unknown or mistyped key is a `ConfigError` naming it, not a silent default.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samaudio.errors import ConfigError

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"


def _build(cls: type, fields: dict[str, Any] | None, where: str):
    """`cls(**fields)` that names an unknown key instead of raising a bare TypeError."""
    if fields is None:
        return cls()
    if isinstance(fields, cls):
        return fields
    if not isinstance(fields, dict):
        raise ConfigError(f"{where} must be a mapping of {cls.__name__} fields, got {type(fields).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in {where} ({cls.__name__}); known keys: {', '.join(sorted(known))}"
        )
    return cls(**fields)


@dataclass
class DACVAEConfig:
    """The DACVAE codec (`audio_codec`). Defaults are the released models'."""

    encoder_dim: int = 64
    encoder_rates: list[int] = field(default_factory=lambda: [2, 8, 10, 12])
    latent_dim: int = 1024
    decoder_dim: int = 1536
    decoder_rates: list[int] = field(default_factory=lambda: [12, 10, 8, 2])
    n_codebooks: int = 16  # sizes dacvae's RVQ, which the VAE bottleneck replaces: unused
    codebook_size: int = 1024  # unused, as n_codebooks
    codebook_dim: int = 128  # C: the latent channels SAM-Audio works in
    quantizer_dropout: bool = False  # unused
    sample_rate: int = 48000
    mean: float = 0.0  # stored by the official config, never applied
    std: float = 1.0  # stored by the official config, never applied

    @property
    def hop_length(self) -> int:
        return int(math.prod(self.encoder_rates))


@dataclass
class T5EncoderConfig:
    """The text encoder (`text_encoder`): a transformers T5 encoder loaded by `name`."""

    name: str = "t5-base"  # hub id, or a folder; a folder beside config.json wins (see text_encoder.py)
    max_length: int | None = 512
    pad_mode: str = "longest"
    dim: int = 768  # must equal the T5 d_model: it sizes SAMAudio.memory_proj


@dataclass
class PerceptionEncoderConfig:
    """The PE CLIP vision encoder (`vision_encoder`) used for visual prompting."""

    dim: int = 1024
    batch_size: int = 300  # frames per encode call
    name: str = "PE-Core-L14-336"
    normalize_feature: bool = True
    interpolation_mode: str = "BICUBIC"
    image_size: int = 336


@dataclass
class TransformerConfig:
    """The flow-matching DiT (`transformer`)."""

    dim: int = 2048
    n_heads: int = 16
    n_layers: int = 16
    dropout: float = 0.1  # live only in training mode; from_pretrained returns eval mode
    norm_eps: float = 1e-5
    qk_norm: bool = True
    fc_bias: bool = False
    ffn_exp: int = 4
    ffn_dim_multiplier: float = 1
    multiple_of: int = 64
    non_linearity: str = "swiglu"
    use_rope: bool = True
    max_positions: int = 10000  # RoPE table length in latent frames (400 s); theta = max(1e4, 2 * this)
    frequency_embedding_dim: int = 256
    timestep_non_linearity: str = "swiglu"
    t_block_non_linearity: str = "silu"
    t_block_bias: bool = True
    context_dim: int = 2048  # must equal dim: memory_proj outputs dim
    context_non_linearity: str = "swiglu"
    context_embedder_dropout: float = 0.0
    context_norm: bool = False
    out_channels: int = 256  # 2C: target and residual latents
    in_channels: int | None = None  # when set, the official model builds an unused data_proj


@dataclass
class SAMAudioConfig:
    """The whole separator. Sub-configs may be given as dicts (as in config.json) or None (defaults)."""

    in_channels: int = 768  # 6C: [noisy, zeros, features] concatenated
    audio_codec: DACVAEConfig | dict | None = None
    text_encoder: T5EncoderConfig | dict | None = None
    vision_encoder: PerceptionEncoderConfig | dict | None = None
    transformer: TransformerConfig | dict | None = None
    num_anchors: int = 3  # <null>, +, -; the Embedding has one more row, the <pad> padding_idx
    anchor_embedding_dim: int = 128
    visual_ranker: dict | None = None  # a ranker config (samaudio.ranking.config); built only on request
    text_ranker: dict | None = None
    span_predictor: str | None = "pe-a-frame-large"

    def __post_init__(self):
        self.audio_codec = _build(DACVAEConfig, self.audio_codec, "audio_codec")
        self.text_encoder = _build(T5EncoderConfig, self.text_encoder, "text_encoder")
        self.vision_encoder = _build(PerceptionEncoderConfig, self.vision_encoder, "vision_encoder")
        self.transformer = _build(TransformerConfig, self.transformer, "transformer")
        self.check()

    def check(self) -> None:
        """The size constraints the official code relies on without checking."""
        c = self.audio_codec.codebook_dim
        if self.in_channels != 6 * c:
            raise ConfigError(f"in_channels is {self.in_channels} but must be 6 * codebook_dim = {6 * c}")
        if self.transformer.out_channels != 2 * c:
            raise ConfigError(
                f"transformer.out_channels is {self.transformer.out_channels} but must be 2 * codebook_dim = {2 * c}"
            )
        if self.transformer.context_dim != self.transformer.dim:
            raise ConfigError(
                f"transformer.context_dim ({self.transformer.context_dim}) must equal transformer.dim "
                f"({self.transformer.dim})"
            )
        if self.transformer.dim % self.transformer.n_heads:
            raise ConfigError(
                f"transformer.dim ({self.transformer.dim}) is not a multiple of n_heads ({self.transformer.n_heads})"
            )

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> "SAMAudioConfig":
        return _build(cls, dict(fields), "config")

    @classmethod
    def from_json(cls, path: str | Path) -> "SAMAudioConfig":
        try:
            fields = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from e
        return cls.from_dict(fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hop_length(self) -> int:
        return self.audio_codec.hop_length

    @property
    def sample_rate(self) -> int:
        return self.audio_codec.sample_rate


# ----------------------------------------------------------------------------------------------------------
# Parts loaded on request only: the span predictor (PE-A-Frame) and the SAM-Audio Judge


def modernbert_defaults() -> dict[str, Any]:
    """ModernBERT-large as PE-A-Frame and the judge use it: transformers `ModernBertConfig` kwargs."""
    return dict(
        hidden_size=1024,
        num_hidden_layers=28,
        num_attention_heads=16,
        intermediate_size=2624,
        global_attn_every_n_layers=3,
        global_rope_theta=160000.0,
        local_rope_theta=10000.0,
        layer_norm_eps=1e-5,
        tie_word_embeddings=True,
    )


@dataclass
class PEAVTransformerConfig:
    """The PE-AV audio transformer (perception_models `core.audio_visual_encoder` TransformerConfig)."""

    hidden_size: int = 1024
    intermediate_size: int = 2752
    num_hidden_layers: int = 16
    num_attention_heads: int = 8
    num_key_value_heads: int | None = None  # None: as many as num_attention_heads
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 10000  # RoPE table length (CLS included); theta = max(1e4, 2 * this)
    attention_bias: bool = False

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(
                    f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                    f"({self.num_attention_heads}); give head_dim"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_attention_heads}) is not a multiple of num_key_value_heads "
                f"({self.num_key_value_heads})"
            )


@dataclass
class PEAudioConfig:
    """PE-A-Frame's audio tower (`audio_model`)."""

    # transformers DacConfig kwargs of the DAC-VAE encoder stored in the checkpoint; SAM-Audio feeds its own
    # codec latents instead, so only `codebook_dim` (the input width) matters at inference
    dac_vae_encoder: dict[str, Any] = field(
        default_factory=lambda: dict(
            encoder_hidden_size=64,
            downsampling_ratios=[2, 8, 10, 12],
            codebook_dim=128,
            codebook_size=1024,
            sampling_rate=48000,
        )
    )
    audio_transformer: PEAVTransformerConfig | dict | None = None

    def __post_init__(self):
        self.audio_transformer = _build(PEAVTransformerConfig, self.audio_transformer, "audio_model.audio_transformer")

    @property
    def codebook_dim(self) -> int:
        return int(self.dac_vae_encoder.get("codebook_dim", 128))


@dataclass
class PEAudioFrameConfig:
    """PE-A-Frame, the frame-level audio-text model behind `predict_spans` (perception_models field names)."""

    text_model: dict[str, Any] = field(default_factory=modernbert_defaults)  # ModernBertConfig kwargs
    audio_model: PEAudioConfig | dict | None = None
    nth_text_layer: int | None = 22  # hidden_states index of the text feature (0 = embeddings); None = last
    output_dim: int = 1024

    def __post_init__(self):
        self.audio_model = _build(PEAudioConfig, self.audio_model, "audio_model")

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> "PEAudioFrameConfig":
        return _build(cls, dict(fields), "span predictor config")


@dataclass
class SAMAudioJudgeConfig:
    """The SAM-Audio Judge (`facebook/sam-audio-judge`): scores a separated stem against its mixture and text."""

    audio_codec: DACVAEConfig | dict | None = None
    transformer: PEAVTransformerConfig | dict | None = None
    finetune_transformer: PEAVTransformerConfig | dict | None = None
    text_model: dict[str, Any] = field(default_factory=modernbert_defaults)  # ModernBertConfig kwargs
    nth_text_layer: int | None = 22
    bottleneck_dim: int = 256

    def __post_init__(self):
        self.audio_codec = _build(DACVAEConfig, self.audio_codec, "audio_codec")
        self.transformer = _build(PEAVTransformerConfig, self.transformer, "transformer")
        self.finetune_transformer = _build(PEAVTransformerConfig, self.finetune_transformer, "finetune_transformer")

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> "SAMAudioJudgeConfig":
        return _build(cls, dict(fields), "judge config")


@dataclass(frozen=True)
class Preset:
    """A named model size: data from `samaudio/presets/<name>.json`, never a code path."""

    name: str
    hub_id: str | None  # where the real weights live (gated); None for our own demo sizes
    vision: bool  # a -tv model, tuned for visual prompting
    notes: str
    unknown: dict  # "field.path" -> [value used, why it is not known]: sizes the public record does not give
    config: dict  # SAMAudioConfig kwargs that differ from the defaults

    def build_config(self) -> SAMAudioConfig:
        return SAMAudioConfig.from_dict(self.config)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def get_preset(name: str) -> Preset:
    """The preset `name` (e.g. "sam-audio-small", "demo-tiny"); a hub id like "facebook/sam-audio-small" works too."""
    stem = name.split("/")[-1]
    path = PRESETS_DIR / f"{stem}.json"
    if not path.is_file():
        raise ConfigError(f"no preset {name!r}; presets: {', '.join(preset_names())}")
    return Preset(**json.loads(path.read_text()))
