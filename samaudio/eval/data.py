"""Evaluation items: a local folder any user can fill, one folder per item.

    <data>/<setting>/<item id>/
        mixture.wav        the input (any rate and channel count; mixed to mono at 48 kHz as the official loaders do)
        description.txt    the text prompt
        reference.wav      optional: the isolated target, for SI-SDR / SDR
        spans.json         optional: [[start_s, end_s], ...] where the target sounds ("+" anchors, span settings)
        video.mp4          optional: the video of a visual setting
        mask.npy           optional: (N, H, W) object mask of video.mp4's frames, non-zero on the object

The official benchmarks fill the same layout: SAM-Audio-Bench lists its items on the hub
(`facebook/sam-audio-bench`) but ships no media, and MUSDB18-HQ comes from Zenodo; `prepare_hint` says where to
get them. Items are read one at a time, so a large set never sits in memory.

Legend: L samples at 48 kHz, N video frames, H x W frame size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from samaudio.errors import SAMAudioError
from samaudio.eval.settings import SAMPLE_RATE, EvalSetting


class DatasetUnavailableError(SAMAudioError):
    """An evaluation setting's items are not where they were looked for; the message says how to get them."""


@dataclass
class EvalItem:
    id: str
    mixture: torch.Tensor  # (1, L) float32, mono at 48 kHz
    description: str
    reference: torch.Tensor | None = None  # (1, L) float32 at 48 kHz, the isolated target
    spans: list[tuple[float, float]] | None = None  # seconds where the target sounds
    video: Path | None = None
    mask: np.ndarray | None = None  # (N, H, W) non-zero on the object


def prepare_hint(setting: EvalSetting, data: Path) -> str:
    where = data / setting.name
    layout = "<item>/mixture.wav + description.txt (+ reference.wav, spans.json, video.mp4, mask.npy)"
    if setting.dataset == "musdb18hq":
        return (
            f"MUSDB18-HQ: download musdb18hq.zip (Zenodo record 3338373) and the item list "
            f"facebook/sam-audio-musdb18hq-test (id, start_time, end_time, description), cut each test mixture and "
            f"its stem to the item's times, and lay them out under {where}/ as {layout}, the stem as reference.wav"
        )
    return (
        f"SAM-Audio-Bench: the item list is facebook/sam-audio-bench on the hub (subset {setting.subset!r}, "
        f"CC BY-NC 4.0) and its media are not: fetch each item's video from its source dataset, cut it to the "
        f"item's offsets, and lay it out under {where}/ as {layout}"
    )


def load_audio(path: Path) -> torch.Tensor:
    """(1, L) float32 mono at 48 kHz, as the official loaders make it (channel mean, then resampled)."""
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (n, ch)
    wav = torch.from_numpy(data.T.copy()).mean(dim=0, keepdim=True)  # (1, n)
    if rate != SAMPLE_RATE:
        import torchaudio

        wav = torchaudio.functional.resample(wav, rate, SAMPLE_RATE)
    return wav


def item_ids(setting: EvalSetting, data: Path) -> list[str]:
    """The ids of the setting's items, sorted (the order every rank agrees on)."""
    folder = data / setting.name
    if not folder.is_dir():
        raise DatasetUnavailableError(f"no items for setting {setting.name!r} at {folder}. {prepare_hint(setting, data)}")
    ids = sorted(p.name for p in folder.iterdir() if (p / "mixture.wav").is_file())
    if not ids:
        raise DatasetUnavailableError(f"{folder} holds no item folder with a mixture.wav. {prepare_hint(setting, data)}")
    return ids


def read_item(setting: EvalSetting, data: Path, item_id: str) -> EvalItem:
    folder = data / setting.name / item_id
    description_file = folder / "description.txt"
    description = description_file.read_text().strip() if description_file.is_file() else ""
    if not description and setting.prompt != "visual":
        raise DatasetUnavailableError(f"item {folder} has no description.txt: a text setting needs one per item")
    item = EvalItem(item_id, load_audio(folder / "mixture.wav"), description)
    if (folder / "reference.wav").is_file():
        item.reference = load_audio(folder / "reference.wav")
    if setting.prompt == "text+span":
        spans_file = folder / "spans.json"
        if not spans_file.is_file():
            raise DatasetUnavailableError(f"item {folder} has no spans.json: setting {setting.name!r} prompts with spans")
        item.spans = [(float(a), float(b)) for a, b in json.loads(spans_file.read_text())]
    if setting.prompt == "visual":
        if not (folder / "video.mp4").is_file():
            raise DatasetUnavailableError(f"item {folder} has no video.mp4: setting {setting.name!r} is visual")
        item.video = folder / "video.mp4"
        if (folder / "mask.npy").is_file():
            item.mask = np.load(folder / "mask.npy")
    return item


def iter_items(setting: EvalSetting, data: Path, ids: list[str]) -> Iterator[EvalItem]:
    for item_id in ids:
        yield read_item(setting, data, item_id)
