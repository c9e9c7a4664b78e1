"""The flow-matching objective of SAMAudio: regress the velocity of a straight path from noise to the stems.

With x1 = [target latents, residual latents] (B, T, 2C), x0 ~ N(0, 1) and t ~ U(0, 1), the path is
x_t = (1 - t) x0 + t x1 and its velocity x1 - x0; `separate()` integrates the learned velocity from t=0 to 1.
The model sees x_t with the conditioning `separate()` gives it: the mixture's codec latents (twice), the text
features of the prompt, zero video features, and anchors ("+" where the target sounds, "-" where it does not,
on random spans, or none).

Legend: B batch, T latent frames, C codec latent channels, S text tokens, Dt text dim, A anchor slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from samaudio.model.model import SAMAudio

# Anchor ids of the official table (see processor.py): <null> 0, "+" 1, "-" 2, <pad> 3.
NULL, PLUS, MINUS, PAD = 0, 1, 2, 3
ANCHOR_PROB = 0.3  # share of items given one span anchor, half "+" and half "-"


@dataclass
class FlowBatch:
    mixture: Tensor  # (B, T, C) codec latents of the mixture
    target: Tensor  # (B, T, C) latents of the prompted sound
    residual: Tensor  # (B, T, C) latents of the rest
    text: Tensor  # (B, S, Dt) text features of the prompts
    text_mask: Tensor  # (B, S) bool
    active: Tensor  # (B, T) bool: frames where the target sounds


def random_anchors(active: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """anchor_ids (B, 3) and anchor_alignment (B, T) as the processor builds them for zero or one anchor.

    An anchored item gets one span of 2+ frames: "+" over frames where the target sounds, "-" where it does
    not (when it has such frames). Others get only <null> (anchor_ids [0, 3, 3], the last slot unused padding).
    """
    B, T = active.shape
    ids = torch.tensor([NULL, PAD, PAD]).repeat(B, 1)  # (B, 3)
    alignment = torch.zeros(B, T, dtype=torch.long)  # (B, T): every frame points at <null>
    draws = torch.rand(B, 3, generator=generator)
    for b in range(B):
        if draws[b, 0] >= ANCHOR_PROB:
            continue
        sign = PLUS if draws[b, 1] < 0.5 else MINUS
        frames = (active[b] if sign == PLUS else ~active[b]).nonzero().flatten()
        if len(frames) < 2:
            continue
        start = int(frames[int(draws[b, 2] * (len(frames) - 1))])
        end = start
        while end < T and bool(active[b, end]) == (sign == PLUS):  # grow over the run the start lies in
            end += 1
        ids[b, 2] = sign
        alignment[b, start:end] = 2
    return ids, alignment


def flow_matching_loss(
    model: SAMAudio, batch: FlowBatch, generator: torch.Generator | None = None
) -> Tensor:
    """Mean squared error between the predicted and the true velocity at a random time of the straight path."""
    x1 = torch.cat([batch.target, batch.residual], dim=-1)  # (B, T, 2C)
    B, T, _ = x1.shape
    x0 = torch.randn(x1.shape, generator=generator).to(x1)
    t = torch.rand(B, generator=generator).to(x1)  # (B,)
    xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
    anchor_ids, anchor_alignment = random_anchors(batch.active.cpu(), generator)
    Dv = model.config.vision_encoder.dim
    pred = model(
        noisy_audio=xt,
        audio_features=torch.cat([batch.mixture, batch.mixture], dim=-1),  # (B, T, 2C), as separate() builds it
        text_features=batch.text,
        time=t,
        masked_video_features=torch.zeros(B, Dv, T, device=x1.device, dtype=x1.dtype),  # as without a video
        text_mask=batch.text_mask,
        anchor_ids=anchor_ids.to(x1.device),
        anchor_alignment=anchor_alignment.to(x1.device),
        audio_pad_mask=torch.ones(B, T, dtype=torch.bool, device=x1.device),
    )  # (B, T, 2C)
    return F.mse_loss(pred, x1 - x0)
