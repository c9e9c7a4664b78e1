"""SAMAudio: the separator that assembles codec, text encoder and DiT, and samples stems by flow matching.

Legend: B batch items, T latent frames (25 per second), C codec latent channels (`codebook_dim`),
D transformer dim, Dt text feature dim, Dv vision feature dim, S text tokens, A anchor slots,
L samples at 48 kHz.

One vector-field evaluation (`forward`):
    x = proj([noisy, zeros, audio_features])          (B, T, 6C) -> (B, T, D)
    x = align_masked_video(x, video) ; x = embed_anchors(x, ids, alignment)
    memory = memory_proj(text) + sinusoid(t)          (B, S, D)
    v = transformer(x, t, memory)                     (B, T, 2C): target and residual velocities
`separate()` integrates v from noise (t=0) to latents (t=1) with torchdiffeq and decodes the halves asked for.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection

import torch
import torch.nn as nn
from torchdiffeq import odeint

from samaudio.errors import ConfigError, InvalidRequestError, StoppedError
from samaudio.model.align import AlignModalities, EmbedAnchors, SinusoidalEmbedding
from samaudio.model.codec import DACVAE
from samaudio.model.config import SAMAudioConfig
from samaudio.model.hub import CONFIG_NAME, check_state_dict, load_weights, resolve_folder
from samaudio.model.span_predictor import (
    DEFAULT_THRESHOLD,
    PEAudioFrame,
    PEAudioFrameTransform,
    anchors_from_spans,
    resolve_span_predictor,
    spans_from_activity,
)
from samaudio.model.text_encoder import T5TextEncoder
from samaudio.model.transformer import DiT
from samaudio.model.vision_encoder import PerceptionEncoder, resolve_pe_config
from samaudio.ranking import Ranker, create_ranker

logger = logging.getLogger(__name__)

DEFAULT_ODE_OPT: dict[str, Any] = {"method": "midpoint", "options": {"step_size": 2 / 32}}


def ode_evaluations(ode_opt: dict[str, Any] | None) -> int | None:
    """Vector-field evaluations `separate()` makes with `ode_opt` (None: the default), or None when the solver
    does not say in advance (an adaptive one)."""
    opt = DEFAULT_ODE_OPT if ode_opt is None else ode_opt
    per_step = {"euler": 1, "midpoint": 2, "rk4": 4}.get(opt.get("method"))  # torchdiffeq's fixed-grid solvers
    step = (opt.get("options") or {}).get("step_size")
    if per_step is None or not step:
        return None
    return per_step * max(1, round(1.0 / step))


def midpoint_ode_opt(steps: int) -> dict[str, Any]:
    """`separate()`'s `ode_opt` for `steps` midpoint steps from noise (t=0) to stems (t=1); the default is 16."""
    return {"method": "midpoint", "options": {"step_size": 1.0 / steps}}


# The two stems of a separation, in the order of the latent halves and of the decoded rows (2n, 2n+1).
STEMS = ("target", "residual")


# Real checkpoints leave these out: each part loads its own weights (the official load_state_dict skips them).
OPTIONAL_PREFIXES = ("text_encoder.", "visual_ranker.", "text_ranker.", "span_predictor.")
RANKER_PREFIXES = ("visual_ranker.", "text_ranker.")
# what from_pretrained takes for a ranker: None/False (not built), True (the config's entry), a kind, a config, a Ranker
RankerRequest = bool | str | dict | Ranker | None
# Built only on request (visual prompting); otherwise its weights are set aside. The -tv models' PE tower is
# 2.7 GB in float32, the official loader's top cause of out-of-memory reports.
VISION_PREFIX = "vision_encoder."
SPAN_PREFIX = "span_predictor."
# What reaches the DiT with predict_spans=True: "fixed" conditions on the predicted anchors (official pull request
# #100, fixing issue #98); "released" reproduces sam-audio 68b48d4, where they are computed and then unused.
SPAN_ANCHOR_MODES = ("fixed", "released")


@dataclass
class SeparationResult:
    target: list[torch.Tensor] | None  # B waveforms (sizes_i * hop,) at 48 kHz: the sound described; None: not asked
    residual: list[torch.Tensor] | None  # B waveforms (sizes_i * hop,): everything else; None: not asked
    noise: torch.Tensor  # (B*K, T, 2C) the ODE's starting point (row b*K + k), to replay a run
    nfe: int = 0  # vector-field evaluations the solver made
    spans: list[list[list[float]]] | None = None  # predict_spans=True: per item [start_s, end_s] of each run
    scores: torch.Tensor | None = None  # (B, K) ranker scores, higher is better; None when no ranker ran
    chosen: torch.Tensor | None = None  # (B,) int64: the candidate returned per item (0 when none was ranked)
    ranker: str | None = None  # "visual_ranker" or "text_ranker": which one chose; None when none did


@dataclass
class CandidateChoice:
    scores: torch.Tensor | None  # (B, K) float, or None when no ranker applies
    chosen: torch.Tensor  # (B,) int64
    ranker: str | None  # attribute name of the ranker used


@dataclass
class SpanPrediction:
    """What `SAMAudio.predict_spans` found: spans, the "+" anchors made of them and their processed tensors."""

    spans: list[list[list[float]]]  # per item [start_s, end_s], float32 seconds
    anchors: list[list[tuple[str, float, float]]]  # per item ("+", start_s, end_s)
    anchor_ids: torch.Tensor  # (B, A) as Batch.process_anchors makes them
    anchor_alignment: torch.Tensor  # (B, T)
    active: torch.Tensor  # (B, T) bool: frame probability > threshold (padded frames included)
    output: Any  # the predictor's PEAudioFrameOutput (embeddings, logits, probs)


def _check_stems(stems: Collection[str]) -> tuple[str, ...]:
    """The asked-for stems in `STEMS` order; an empty, repeated or unknown name is an InvalidRequestError."""
    names = list(stems) if not isinstance(stems, str) else [stems]
    if not names or len(set(names)) != len(names) or any(n not in STEMS for n in names):
        raise InvalidRequestError(
            f"stems {names} must name 'target' and/or 'residual' once each; pass both for the two stems"
        )
    return tuple(n for n in STEMS if n in names)


class SAMAudio(nn.Module):
    def __init__(
        self,
        config: SAMAudioConfig,
        *,
        text_encoder: T5TextEncoder,
        vision_encoder: PerceptionEncoder | None = None,
        span_predictor: PEAudioFrame | None = None,
        span_predictor_transform: PEAudioFrameTransform | None = None,
        visual_ranker: Ranker | None = None,
        text_ranker: Ranker | None = None,
    ):
        super().__init__()
        self.config = config
        D = config.transformer.dim
        # attribute order = official state_dict order
        self.audio_codec = DACVAE(config.audio_codec)
        self.text_encoder = text_encoder
        self.vision_encoder = vision_encoder  # None unless visual prompting was asked for
        self.transformer = DiT(config.transformer)
        self.proj = nn.Linear(config.in_channels, D)
        self.align_masked_video = AlignModalities(config.vision_encoder.dim, D)
        self.embed_anchors = EmbedAnchors(config.num_anchors, config.anchor_embedding_dim, D)
        self.memory_proj = nn.Linear(config.text_encoder.dim, D)
        self.timestep_emb = SinusoidalEmbedding(D)
        self.span_predictor = span_predictor  # None unless asked for (from_pretrained(..., span_predictor=...))
        self.span_predictor_transform = span_predictor_transform  # its tokenizer; not a module
        # None unless asked for (from_pretrained(text_ranker=..., visual_ranker=...)): scoring only, K > 1
        self.visual_ranker = visual_ranker
        self.text_ranker = text_ranker

    @property
    def sample_rate(self) -> int:
        return self.audio_codec.sample_rate

    @property
    def hop_length(self) -> int:
        return self.audio_codec.hop_length

    @property
    def device(self) -> torch.device:
        return self.proj.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.proj.weight.dtype

    # ------------------------------------------------------------------ one vector-field evaluation

    def forward(
        self,
        noisy_audio: torch.Tensor,
        audio_features: torch.Tensor,
        text_features: torch.Tensor | None,
        time: torch.Tensor,
        masked_video_features: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        anchor_ids: torch.Tensor | None = None,
        anchor_alignment: torch.Tensor | None = None,
        audio_pad_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # the middle 2C columns of proj see zeros at inference (a training-time slot); they are still loaded
        x = torch.cat([noisy_audio, torch.zeros_like(audio_features), audio_features], dim=-1)  # (B, T, 6C)
        x = self.proj(x)  # (B, T, D)
        x = self.align_masked_video(x, masked_video_features)
        x = self.embed_anchors(x, anchor_ids, anchor_alignment)
        te = self.timestep_emb(time).unsqueeze(1)  # (B, 1, D)
        memory = te if text_features is None else self.memory_proj(text_features) + te  # (B, S, D)
        return self.transformer(
            x, time, padding_mask=audio_pad_mask, memory=memory, memory_padding_mask=text_mask
        )  # (B, T, 2C)

    # ------------------------------------------------------------------ conditioning, computed once per call

    def encode_text(self, descriptions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """T5 features (B, S, Dt) in the model's dtype and the token mask (B, S) bool."""
        features, mask = self.text_encoder(descriptions)
        return features.to(self.dtype), mask

    def encode_audio(self, audios: torch.Tensor, should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
        """Codec features of (B, 1, L) audio as the DiT reads them: (B, T, 2C), the latent twice. `should_stop` is
        asked between the codec's layers (see `separate`)."""
        z = self.audio_codec(audios.to(self.device, self.dtype), should_stop).transpose(1, 2)  # (B, T, C)
        return torch.cat([z, z], dim=-1)  # (B, T, 2C)

    def _get_forward_args(
        self, batch, text_features=None, should_stop=None, audio_features=None
    ) -> dict[str, torch.Tensor]:
        device, dtype = self.device, self.dtype
        if audio_features is None:
            audio_features = self.encode_audio(batch.audios, should_stop)  # (B, T, 2C)
        elif audio_features.shape[0] != batch.audios.shape[0]:
            raise InvalidRequestError(
                f"audio_features hold {audio_features.shape[0]} rows for a batch of {batch.audios.shape[0]}: give "
                "one (T, 2C) row per item, as encode_audio returns"
            )
        B, T, _ = audio_features.shape
        if text_features is None:
            text, text_mask = self.encode_text(list(batch.descriptions))
        else:
            text, text_mask = text_features
            if text.shape[0] != B or text_mask.shape[:2] != text.shape[:2]:
                raise InvalidRequestError(
                    f"text_features hold {text.shape[0]} rows with mask {tuple(text_mask.shape)} for a batch of "
                    f"{B}: give one (features, mask) row per item, as encode_text returns"
                )
        if getattr(batch, "masked_video", None) is None:
            # official: zeros, not None, when there is no video (so the conv bias term is still added)
            video = torch.zeros(B, self.config.vision_encoder.dim, T, device=device, dtype=dtype)
        elif self.vision_encoder is None:
            raise InvalidRequestError(
                "this batch has masked videos but the model was loaded without its vision encoder: load it with "
                "SAMAudio.from_pretrained(..., vision=True)"
            )
        else:
            video = self.vision_encoder(batch.masked_video, length=T).transpose(1, 2).to(dtype)  # (B, Dv, T)
        return dict(
            audio_features=audio_features.to(device, dtype),  # (B, T, 2C): the latent twice
            text_features=text.to(device, dtype),
            text_mask=text_mask.to(device),
            masked_video_features=video,
            anchor_ids=batch.anchor_ids.to(device),
            anchor_alignment=batch.anchor_alignment.to(device),
            audio_pad_mask=batch.audio_pad_mask.to(device),
        )

    def _require_span_predictor(self) -> None:
        if self.span_predictor is None:
            raise InvalidRequestError(
                "span prediction needs the PE-A-Frame span predictor, which this model was loaded without: load it "
                "with SAMAudio.from_pretrained(..., span_predictor='pe-a-frame-large' or a folder)"
            )

    @torch.inference_mode()
    def frame_activity(
        self,
        descriptions: list[str],
        audio_features: torch.Tensor,
        audio_pad_mask: torch.Tensor | None = None,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> tuple[Any, torch.Tensor]:
        """The span predictor on audio features (B, T, 2C): its output and the active frames (B, T) bool.

        Works on any stretch of features (a streaming window's, say); frames under `audio_pad_mask` False are
        masked inside the predictor but still scored, as in the official model.
        """
        self._require_span_predictor()
        device = self.device
        width = self.span_predictor.input_dim
        if audio_features.shape[-1] < width:
            raise InvalidRequestError(
                f"the span predictor reads {width} latent channels but this model's audio features have "
                f"{audio_features.shape[-1]}: the predictor does not fit this codec"
            )
        text = self.span_predictor_transform(descriptions)
        out = self.span_predictor(
            input_ids=text["input_ids"].to(device),
            attention_mask=text["attention_mask"].to(device),
            input_features=audio_features[:, :, :width].to(device),  # (B, T, Ci)
            padding_mask=None if audio_pad_mask is None else audio_pad_mask.to(device),
        )
        return out, out.probs > threshold  # strict, as the official threshold

    @torch.inference_mode()
    def predict_spans(
        self,
        batch,
        audio_features: torch.Tensor | None = None,
        audio_pad_mask: torch.Tensor | None = None,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> SpanPrediction:
        """Where each item's description is active: spans, "+" anchors and their tensors. The batch stays untouched.

        `audio_features` (B, T, 2C) as `_get_forward_args` makes them (encoded here when None). The predictor
        reads their first `codebook_dim` columns of its own config: official code slices a literal 128, which is
        the latent z for the released sizes (C = 128, predictor width 128).
        """
        self._require_span_predictor()
        if audio_features is None:
            audio_features = self.encode_audio(batch.audios)  # (B, T, 2C)
        if audio_pad_mask is None:
            audio_pad_mask = batch.audio_pad_mask
        out, active = self.frame_activity(list(batch.descriptions), audio_features, audio_pad_mask, threshold)
        spans = spans_from_activity(active, self.span_predictor.hop_length, self.span_predictor.sample_rate)
        anchors = anchors_from_spans(spans)
        scratch = copy.copy(batch)  # process_anchors sets attributes: do it on a shallow copy
        # a one-frame run can end up empty after the float32 seconds round trip (spec: spans.md): no warning
        scratch.process_anchors(anchors, warn_empty=False)
        return SpanPrediction(spans, anchors, scratch.anchor_ids, scratch.anchor_alignment, active, out)

    # ------------------------------------------------------------------ sampling

    @torch.inference_mode()
    def separate(
        self,
        batch,
        noise: torch.Tensor | None = None,
        ode_opt: dict[str, Any] | None = None,
        reranking_candidates: int = 1,
        predict_spans: bool = False,
        watermark_message: torch.Tensor | None = None,
        text_features: tuple[torch.Tensor, torch.Tensor] | None = None,
        should_stop: Callable[[], bool] | None = None,
        span_anchors: str = "fixed",
        span_threshold: float = DEFAULT_THRESHOLD,
        stems: Collection[str] = STEMS,
        autocast: torch.dtype | None = None,
        on_step: Callable[[int], None] | None = None,
        audio_features: torch.Tensor | None = None,
    ) -> SeparationResult:
        """Separate each item of a processor `Batch` into the described sound and the rest.

        With `reranking_candidates=K` each item is solved from K noises (all B*K rows in one batch; rows
        b*K .. b*K+K-1 belong to item b) and a loaded ranker picks one per item (see `choose_candidates`).
        `noise` (B*K, T, 2C) and `watermark_message` (2*B*K, 16) replay a run exactly; when None they are drawn
        from the global generators as the official model draws them. `text_features` reuses `encode_text` output.
        `should_stop` is asked before every vector-field evaluation and between the codec's layers when encoding
        and decoding; once it returns True the call raises `StoppedError`, so work for a caller that went away
        ends within one solver step or codec layer (issues 17, 19).
        `predict_spans=True` (span predictor loaded, batch without anchors) prompts each item with "+" anchors
        on the frames the predictor finds active; `span_anchors="released"` instead reproduces sam-audio 68b48d4,
        whose DiT never sees them (official issue #98). The spans come back in the result; the batch is untouched.
        `stems` names the stems to decode ("target", "residual" or both); a stem not asked for is None in the
        result and costs no decoding, the codec's largest share of a separation (#20); the candidates' targets
        are still decoded when a ranker needs them. The message rows and random draws are the same whichever
        stems are asked for.
        `autocast` (opt-in, e.g. torch.bfloat16) runs encoding, the solver and decoding under `torch.autocast` on
        the model's device: faster where the hardware has the type, at a fidelity cost the benchmark measures
        (max|diff| against float32; #20). Stems are returned in float32 either way.
        `on_step(evaluations)` is called after every vector-field evaluation with the count so far, so a caller
        can show progress inside one call (issue 17).
        `audio_features` (B, T, 2C) reuses `encode_audio` output for the batch's audios, so that a mixture shared
        by several items (one per description) is encoded once (issue 17).
        """
        K = int(reranking_candidates)
        if K < 1:
            raise InvalidRequestError(f"reranking_candidates is {reranking_candidates}; it must be at least 1")
        if span_anchors not in SPAN_ANCHOR_MODES:
            raise InvalidRequestError(f"span_anchors is {span_anchors!r}; expected one of {', '.join(SPAN_ANCHOR_MODES)}")
        if predict_spans:
            self._require_span_predictor()
        wanted = _check_stems(stems)
        if autocast is None:
            return self._separate(
                batch, noise, ode_opt, K, predict_spans, watermark_message, text_features, should_stop, span_anchors,
                span_threshold, wanted, on_step, audio_features,
            )
        with torch.autocast(self.device.type, dtype=autocast):
            result = self._separate(
                batch, noise, ode_opt, K, predict_spans, watermark_message, text_features, should_stop, span_anchors,
                span_threshold, wanted, on_step, audio_features,
            )
        for stem in STEMS:
            if getattr(result, stem) is not None:
                setattr(result, stem, [w.float() for w in getattr(result, stem)])
        return result

    def _separate(
        self,
        batch,
        noise: torch.Tensor | None,
        ode_opt: dict[str, Any] | None,
        K: int,
        predict_spans: bool,
        watermark_message: torch.Tensor | None,
        text_features: tuple[torch.Tensor, torch.Tensor] | None,
        should_stop: Callable[[], bool] | None,
        span_anchors: str,
        span_threshold: float,
        wanted: tuple[str, ...],
        on_step: Callable[[int], None] | None = None,
        audio_features: torch.Tensor | None = None,
    ) -> SeparationResult:
        """`separate` past its argument checks."""
        args = self._get_forward_args(batch, text_features, should_stop, audio_features)
        spans = None
        if predict_spans and getattr(batch, "anchors", None) is None:  # user anchors always win
            found = self.predict_spans(batch, args["audio_features"], args["audio_pad_mask"], span_threshold)
            spans = found.spans
            if span_anchors == "fixed":
                args["anchor_ids"] = found.anchor_ids.to(self.device)
                args["anchor_alignment"] = found.anchor_alignment.to(self.device)
        B = args["audio_features"].shape[0]
        if K > 1:  # candidates differ only by their noise: every conditioning row repeated K times, item-major
            args = {name: value.repeat_interleave(K, dim=0) for name, value in args.items()}
        features = args["audio_features"]
        N = features.shape[0]  # B * K
        if noise is None:
            noise = torch.randn_like(features, dtype=self.dtype)  # the float32 draw under autocast too
        elif noise.shape != features.shape:
            raise InvalidRequestError(
                f"noise has shape {tuple(noise.shape)} but this batch needs {tuple(features.shape)} (B*K, T, 2C) "
                f"for {B} item(s) x {K} candidate(s)"
            )
        noise = noise.to(features.device, self.dtype)  # the solver state stays in the model's dtype

        nfe = 0

        def velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            nonlocal nfe
            if should_stop is not None and should_stop():
                raise StoppedError(f"separation stopped after {nfe} vector-field evaluations: should_stop() was true")
            nfe += 1
            v = self.forward(noisy_audio=x, time=t.expand(N), **args)
            if on_step is not None:
                on_step(nfe)
            return v

        opt = DEFAULT_ODE_OPT if ode_opt is None else ode_opt
        times = torch.tensor([0.0, 1.0], device=features.device, dtype=torch.float32)
        states = odeint(velocity, noise, times, method=opt.get("method"), options=opt.get("options"))
        latents = states[-1]  # (N, T, 2C)

        C = latents.shape[-1] // 2
        rows = latents.transpose(1, 2).reshape(2 * N, C, -1)  # (2N, C, T): row 2n target, 2n+1 residual
        if watermark_message is None:
            # drawn for both stems whatever is decoded, so the global generator advances the same either way
            watermark_message = torch.randint(0, 2, (2 * N, self.audio_codec.nbits), dtype=torch.float32)
        elif watermark_message.shape[0] != 2 * N:
            raise InvalidRequestError(
                f"watermark_message has {watermark_message.shape[0]} rows for {N} row(s) (items x candidates): give "
                f"2 * {N} rows, target and residual of each"
            )
        # a ranker (K > 1) scores every candidate's target, so the targets are decoded whenever it runs
        decoded = STEMS if K > 1 and "residual" in wanted else ("target",) if K > 1 else wanted
        if len(decoded) < 2:
            # only one stem's rows: one decode of N rows instead of 2N
            s = STEMS.index(decoded[0])
            rows, watermark_message = rows[s::2], watermark_message[s::2]  # (N, C, T), (N, 16)
        # stop points only when asked for: a decode shadowed by a caller (tests record it) keeps its signature
        stop = {} if should_stop is None else {"should_stop": should_stop}
        wavs = self.audio_codec.decode(rows, message=watermark_message, **stop)  # (N * len(decoded), 1, T * hop)
        wavs = wavs.view(B, K, len(decoded), -1)
        lengths = self.audio_codec.feature_idx_to_wav_idx(batch.sizes).tolist()  # cut to the padded length
        stem_wavs = {
            stem: [wavs[b, :, decoded.index(stem), : lengths[b]] for b in range(B)]  # B x (K, L_b)
            for stem in decoded
        }
        targets = stem_wavs.get("target")
        if targets is None:  # K == 1 and the residual alone: nothing to rank
            choice = CandidateChoice(scores=None, chosen=torch.zeros(B, dtype=torch.long), ranker=None)
        else:
            choice = self.choose_candidates(
                targets,
                mixtures=[batch.audios[b][:, : lengths[b]] for b in range(B)],
                descriptions=list(batch.descriptions),
                masked_videos=getattr(batch, "masked_video", None),
            )
        chosen = choice.chosen.tolist()
        picked = {stem: [w[b][chosen[b]] for b in range(B)] for stem, w in stem_wavs.items() if stem in wanted}
        return SeparationResult(
            target=picked.get("target"),
            residual=picked.get("residual"),
            noise=noise,
            nfe=nfe,
            spans=spans,
            scores=choice.scores,
            chosen=choice.chosen,
            ranker=choice.ranker,
        )

    def choose_candidates(
        self,
        targets: list[torch.Tensor],
        *,
        mixtures: list[torch.Tensor],
        descriptions: list[str],
        masked_videos: list[torch.Tensor] | None = None,
    ) -> CandidateChoice:
        """Pick one of K candidate targets per item with the official rules.

        `targets` B tensors (K, L_b) at 48 kHz; `mixtures` B tensors (1, L_b) or (L_b,), the mixture each item was
        separated from (rows are cut or zero-padded as the caller had them; it is repeated K times here);
        `masked_videos` the batch's B masked videos or None. Rules, in order: K > 1 with masked videos and a
        visual ranker -> the visual ranker; K > 1 with a text ranker -> the text ranker; otherwise candidate 0.
        The highest score wins, ties to the lowest index. A streaming engine calls this once per window.
        """
        B = len(targets)
        K = targets[0].shape[0] if B else 1
        if K > 1 and masked_videos is not None and self.visual_ranker is not None:
            name = "visual_ranker"
            scores = self.visual_ranker(extracted_audio=targets, videos=masked_videos, sample_rate=self.sample_rate)
        elif K > 1 and self.text_ranker is not None:
            name = "text_ranker"
            mix = [m.reshape(1, -1).expand(K, -1) for m in mixtures]  # (K, L_b): the mixture per candidate
            scores = self.text_ranker(
                extracted_audio=targets, input_audio=mix, descriptions=descriptions, sample_rate=self.sample_rate
            )
        else:
            return CandidateChoice(scores=None, chosen=torch.zeros(B, dtype=torch.long), ranker=None)
        scores = scores.reshape(B, K).float().cpu()  # ImageBind scores (B, K, 1), the others (B, K)
        return CandidateChoice(scores=scores, chosen=scores.argmax(dim=1), ranker=name)

    # ------------------------------------------------------------------ building and loading

    @classmethod
    def from_config(
        cls,
        config: SAMAudioConfig | dict,
        *,
        root: str | os.PathLike | None = None,
        random_text_encoder: bool = False,
        vision: bool = False,
        pe_config: dict | None = None,
        span_predictor: PEAudioFrame | None = None,
        span_predictor_transform: PEAudioFrameTransform | None = None,
    ) -> "SAMAudio":
        """A model with random weights (eval mode). The T5 is loaded by name unless `random_text_encoder`.

        A `span_predictor` given here (with its transform) is attached as is, e.g. a randomly initialised
        `PEAudioFrame(PEAudioFrameConfig(...))` for tests at tiny sizes.
        """
        if (span_predictor is None) != (span_predictor_transform is None):
            raise InvalidRequestError("give span_predictor and span_predictor_transform together (or neither)")
        if isinstance(config, dict):
            config = SAMAudioConfig.from_dict(config)
        if random_text_encoder:
            text_encoder = T5TextEncoder.random(config.text_encoder)
        else:
            text_encoder = T5TextEncoder.from_config(config.text_encoder, root=root)
        vision_encoder = PerceptionEncoder(config.vision_encoder, pe_config) if vision else None
        return cls(
            config,
            text_encoder=text_encoder,
            vision_encoder=vision_encoder,
            span_predictor=span_predictor,
            span_predictor_transform=span_predictor_transform,
        ).eval()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        revision: str | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        *,
        vision: bool = False,
        pe_config: dict | None = None,
        span_predictor: str | os.PathLike | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | None = None,
        text_ranker: RankerRequest = None,
        visual_ranker: RankerRequest = None,
        **config_overrides: Any,
    ) -> "SAMAudio":
        """Load an official hub repo (`facebook/sam-audio-small` ...) or a local folder, in eval mode.

        Only what is asked for is built: the vision encoder, rankers and span predictor are skipped (their
        weights set aside), which keeps memory at the DiT + codec + T5. `vision=True` builds the PE vision
        encoder for visual prompting; its sizes come from the registry by `vision_encoder.name`, else from
        `pe_config`, else from the checkpoint's tensor shapes. Top-level config keys can be overridden as
        keywords, as in the official loader (e.g. `text_encoder={"name": "/models/t5-base"}`).

        `span_predictor` loads PE-A-Frame for `separate(predict_spans=True)`: a folder (a relative name is looked
        up beside config.json first), a hub id, an official name such as "pe-a-frame-large" (`facebook/<name>`),
        or True for the one config.json names (the official `span_predictor` key). None or False: not built.

        Rankers (for `separate(reranking_candidates=K)`) are built only when asked for, even when config.json
        names them (the official loader builds every configured ranker, its top out-of-memory cause):
        `text_ranker=True` builds the config's own entry; a kind ("clap", "judge", "imagebind"), a config dict
        in the official form (`{"kind": "ensemble", "rankers": {...}}`) or a built `Ranker` gives another.
        Relative checkpoint paths in a ranker config are read from the model folder.
        """
        folder = resolve_folder(name_or_path, revision=revision, cache_dir=cache_dir, token=token)
        fields = json.loads((folder / CONFIG_NAME).read_text())
        for key, value in config_overrides.items():
            if key not in fields and key not in SAMAudioConfig.__dataclass_fields__:
                raise ConfigError(f"unknown config override {key!r}")
            fields[key] = value
        config = SAMAudioConfig.from_dict(fields)
        state = load_weights(folder)
        vision_encoder = None
        if vision:
            pe = resolve_pe_config(config.vision_encoder.name, pe=pe_config, state=state, prefix=VISION_PREFIX + "model.")
            vision_encoder = PerceptionEncoder(config.vision_encoder, pe)
        text_encoder = T5TextEncoder.from_config(config.text_encoder, root=folder)
        predictor, transform = None, None
        if span_predictor is True:
            if config.span_predictor is None:
                raise ConfigError(
                    f"span_predictor=True loads the span predictor config.json names, but {folder / CONFIG_NAME} "
                    "has span_predictor null: pass a folder or hub id, e.g. span_predictor='pe-a-frame-large'"
                )
            span_predictor = config.span_predictor
        if span_predictor not in (None, False):
            config.span_predictor = str(span_predictor)
            where = resolve_span_predictor(span_predictor, root=folder, cache_dir=cache_dir, token=token)
            predictor = PEAudioFrame.from_pretrained(where)
            transform = PEAudioFrameTransform.from_folder(where)
        rankers = {
            name: _build_ranker(request, getattr(config, name), name, root=folder)
            for name, request in (("visual_ranker", visual_ranker), ("text_ranker", text_ranker))
        }
        model = cls(
            config,
            text_encoder=text_encoder,
            vision_encoder=vision_encoder,
            span_predictor=predictor,
            span_predictor_transform=transform,
            **rankers,
        )
        model.load_checkpoint(state)
        model.eval()  # the official loader leaves dropout (0.1) live
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        model = model.to(device=device, dtype=dtype)
        for ranker in (model.visual_ranker, model.text_ranker):
            if ranker is not None:  # scoring stays in float32: their front ends (fbank, STFT, int16) expect it
                ranker.float()
        return model

    def load_checkpoint(self, state: dict[str, torch.Tensor]) -> None:
        """Load a state_dict with an explicit, checked key map: every problem is named before anything loads."""
        vision = [k for k in state if k.startswith(VISION_PREFIX)]
        if vision and self.vision_encoder is None:
            logger.info("setting aside %d vision_encoder weights (visual prompting not requested)", len(vision))
            state = {k: v for k, v in state.items() if not k.startswith(VISION_PREFIX)}
        if self.span_predictor is None and any(k.startswith(SPAN_PREFIX) for k in state):
            state = {k: v for k, v in state.items() if not k.startswith(SPAN_PREFIX)}  # not asked for
        # rankers load their own weights when built; any copy in the checkpoint is not needed
        state = {k: v for k, v in state.items() if not k.startswith(RANKER_PREFIXES)}
        check_state_dict(
            state,
            self.state_dict(),
            "checkpoint",
            "Is config.json the one saved with these weights?",
            optional_prefixes=OPTIONAL_PREFIXES,
        )
        result = self.load_state_dict(state, strict=False)
        assert not result.unexpected_keys, result.unexpected_keys

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write `config.json`, `model.safetensors` and the T5 (folder `t5/`), loadable offline by from_pretrained."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        fields = self.config.to_dict()
        fields["text_encoder"]["name"] = "t5"  # the folder beside config.json, as in text_encoder.py's resolver
        self.text_encoder.save_pretrained(folder / "t5")
        (folder / CONFIG_NAME).write_text(json.dumps(fields, indent=2))
        # safetensors refuses tensors that share memory (T5's tied embeddings): store each as its own copy
        tensors, seen = {}, set()
        for key, value in self.state_dict().items():
            if key.startswith(RANKER_PREFIXES):  # each ranker loads its own weights, as in official checkpoints
                continue
            ptr = value.data_ptr()
            tensors[key] = value.detach().clone().contiguous() if ptr in seen else value.detach().contiguous()
            seen.add(ptr)
        save_file(tensors, str(folder / "model.safetensors"))
        return folder


def _build_ranker(request: RankerRequest, configured: dict | None, name: str, *, root: Path) -> Ranker | None:
    """The ranker `from_pretrained(..., name=request)` asks for; `configured` is config.json's entry."""
    if request is None or request is False:
        if configured is not None:
            logger.info("config.json names a %s (%s); not built: pass %s=True to load it", name, configured, name)
        return None
    if isinstance(request, Ranker):
        return request
    if request is True:
        if configured is None:
            raise ConfigError(f"{name}=True but config.json names no {name}: pass a kind or a ranker config dict")
        request = configured
    elif isinstance(request, str):
        same_kind = isinstance(configured, dict) and configured.get("kind") == request
        request = configured if same_kind else {"kind": request}
    return create_ranker(request, root=root)
