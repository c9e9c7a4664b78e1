"""`samaudio eval --server`: the evaluation's separator that separates through a samaudio server.

The evaluation itself is the library's (`samaudio.eval`, models in this process, so it needs the `[server]` and
`[eval]` extras); this module is what the command line passes in for `--server`. Seeded per item as the
in-process separator is (`samaudio.eval.settings.item_seed`). Imports no torch: the stems come back as arrays.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import numpy as np

from samaudio.eval.settings import SAMPLE_RATE, item_seed
from samaudio_client.client import Client, Video

if TYPE_CHECKING:
    from samaudio.eval.data import EvalItem

__all__ = ["ServerSeparator"]


class ServerSeparator:
    """A samaudio server separates (its streaming engine: windows and seams included), through the thin client."""

    def __init__(self, address: str, *, candidates: int = 1, predict_spans: bool = False, seed: int = 0,
                 steps: int | None = None, token: str | None = None, ca_file: str | None = None, **options: Any):
        self.client = Client(address, token=token, ca_file=ca_file)
        self.options: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
        if steps is not None:
            self.options["solver_steps"] = steps
        if candidates != 1:
            self.options["candidates"] = candidates
        if predict_spans:
            self.options["predict_spans"] = True
        self.seed = seed

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServerSeparator:
        """The separator `samaudio eval --server` asks for."""
        return cls(
            args.server, candidates=args.candidates, predict_spans=args.predict_spans, seed=args.seed,
            steps=args.steps, token=args.token, ca_file=args.tls_ca, model=args.model,
        )

    def __call__(self, item: EvalItem) -> tuple[np.ndarray, Any]:
        video = Video.from_file(item.video, masks=item.mask) if item.video is not None else None
        spans = [("+", a, b) for a, b in item.spans] if item.spans else ()
        audio = item.mixture[0].numpy().astype(np.float32)  # (L,) mono at 48 kHz
        stems = self.client.separate(
            audio, SAMPLE_RATE, item.description, spans, video=video, seed=item_seed(self.seed, item.id),
            **self.options,
        )
        return np.ascontiguousarray(stems.target, dtype=np.float32)[None], None  # (1, L)

    def close(self) -> None:
        self.client.close()
