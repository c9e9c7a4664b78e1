"""What an evaluation separates with: the model in this process. A samaudio server is the thin client's
(`samaudio_client.evaluation.ServerSeparator`), which `samaudio eval --server` passes in: the library does not
import its clients.

Both are seeded per item (the run's seed and the item's id), so an item's target does not depend on which
rank, batch or run separated it: a resumed or data-parallel run gives the numbers of a single one.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from samaudio.eval.data import EvalItem
from samaudio.eval.settings import SAMPLE_RATE, item_seed


class Separator(Protocol):
    def __call__(self, item: EvalItem) -> tuple[torch.Tensor, Any]:
        """The item's separated target (1, L') at 48 kHz (a tensor or an array), and the masked video it was
        prompted with (or None)."""
        ...


class InProcessSeparator:
    """`SAMAudio.separate` on one item at a time, with K candidates and span prediction as asked (the official
    harness's call: `model.separate(batch, reranking_candidates=K)`)."""

    def __init__(self, model: Any, processor: Any, *, candidates: int = 1, predict_spans: bool = False,
                 seed: int = 0, steps: int | None = None):
        self.model, self.processor = model, processor
        self.candidates, self.predict_spans, self.seed = candidates, predict_spans, seed
        self.ode_opt = None
        if steps is not None:
            from samaudio.model.model import midpoint_ode_opt

            self.ode_opt = midpoint_ode_opt(steps)

    def __call__(self, item: EvalItem) -> tuple[torch.Tensor, Any]:
        anchors = [[("+", a, b) for a, b in item.spans]] if item.spans else None
        video = None
        if item.video is not None:
            videos = [str(item.video)]
            video = self.processor.mask_videos(videos, [torch.from_numpy(item.mask)])[0] if item.mask is not None else videos[0]
        batch = self.processor(
            descriptions=[item.description], audios=[item.mixture], anchors=anchors,
            masked_videos=None if video is None else [video],
        )
        with torch.random.fork_rng(devices=[]):  # noise and watermark from the item's own seed
            torch.manual_seed(item_seed(self.seed, item.id))
            result = self.model.separate(
                batch.to(self.model.device), ode_opt=self.ode_opt, reranking_candidates=self.candidates,
                predict_spans=self.predict_spans and not item.spans,
            )
        return result.target[0].float().cpu()[None], video
