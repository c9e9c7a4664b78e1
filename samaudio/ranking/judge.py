"""The judge ranker (official sam_audio/ranking/judge.py): the SAM-Audio Judge's `overall` score per candidate.

Legend: B items, K candidates, N = B*K rows, L samples at 48 kHz.
The judge model and its processor live in `samaudio.model.judge`; this wrapper flattens the candidates into
N (mixture, separated, description) rows and reshapes the `overall` column back to (B, K).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from samaudio.errors import InvalidRequestError
from samaudio.ranking.config import JudgeRankerConfig
from samaudio.ranking.ranker import Ranker


class JudgeRanker(Ranker):
    def __init__(self, config: JudgeRankerConfig | None = None, *, root: str | os.PathLike | None = None):
        super().__init__()
        from samaudio.model.judge import SAMAudioJudgeModel, SAMAudioJudgeProcessor

        self.config = config or JudgeRankerConfig()
        source = self.config.checkpoint_or_model_id
        local = Path(source).expanduser()
        if root is not None and not local.is_absolute() and (Path(root) / local).is_dir():
            source = str(Path(root) / local)  # a folder relative to the config that names it
        self.model = SAMAudioJudgeModel.from_pretrained(source)
        self.processor = SAMAudioJudgeProcessor.from_pretrained(source)

    @torch.inference_mode()
    def forward(
        self,
        extracted_audio: list[torch.Tensor],
        input_audio: list[torch.Tensor],
        descriptions: list[str],
        sample_rate: int = 48000,
        **kwargs: Any,
    ) -> torch.Tensor:
        B = len(extracted_audio)
        if not (len(input_audio) == len(descriptions) == B):
            raise InvalidRequestError(
                f"{B} candidate blocks, {len(input_audio)} mixtures and {len(descriptions)} descriptions: give one "
                "of each per item"
            )
        K = extracted_audio[0].shape[0]
        # rankers run in float32 whatever the separator's dtype (SAMAudio.from_pretrained keeps them there)
        separated = [row[None].float() for block in extracted_audio for row in block]  # N x (1, L_b)
        mixtures = [row[None].float() for block in input_audio for row in block.expand(K, -1)]
        text = [d for d in descriptions for _ in range(K)]
        device = next(self.model.parameters()).device
        inputs = self.processor(text, mixtures, separated, sampling_rate=sample_rate)
        inputs = {name: value.to(device) for name, value in inputs.items()}
        return self.model(**inputs).overall.view(B, K)
