"""The official evaluation settings as data (official eval/dataset/__init__.py), one row per `--setting`.

Each setting names its dataset, the subset tag the official loader filters SAM-Audio-Bench on, which prompts
the items carry (text, text + the benchmark's human "+" spans, or a masked video) and the column of the
official README's table it feeds.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from samaudio.errors import InvalidRequestError

SAMPLE_RATE = 48000  # every item, target and metric of an evaluation


def item_seed(seed: int, item_id: str) -> int:
    """A seed per item that every process computes alike (Python's hash() is salted per process)."""
    return (seed * 1_000_003 + zlib.crc32(item_id.encode())) % (2**31)


@dataclass(frozen=True)
class EvalSetting:
    name: str
    dataset: str  # "sam-audio-bench" or "musdb18hq"
    subset: str | None  # the `paper_eval_sets` tag of SAM-Audio-Bench; None for MUSDB18-HQ (its own item list)
    prompt: str  # "text", "text+span" or "visual"
    column: str | None  # the official README's table column, when the setting has one


def _bench(name: str, subset: str, prompt: str, column: str | None = None) -> EvalSetting:
    return EvalSetting(name, "sam-audio-bench", subset, prompt, column)


SETTINGS: dict[str, EvalSetting] = {
    s.name: s
    for s in [
        _bench("sfx", "others-50:text-only", "text", "General SFX"),
        _bench("speech", "speech-clean-50:text-only", "text", "Speech"),
        _bench("speaker", "spk-50:text-only", "text", "Speaker"),
        _bench("music", "music-clean-50:text-only", "text", "Music"),
        _bench("instr-wild", "instr-50:text-only", "text", "Instr(wild)"),
        EvalSetting("instr-pro", "musdb18hq", None, "text", "Instr(pro)"),
        _bench("sfx-span", "others-50:text+span", "text+span"),
        _bench("speech-span", "speech-clean-50:text+span", "text+span"),
        _bench("speaker-span", "spk-50:text+span", "text+span"),
        _bench("music-span", "music-clean-50:text+span", "text+span"),
        _bench("instr-wild-span", "instr-50:text+span", "text+span"),
        _bench("sfx-visual", "others-onscreen-50:visual-only", "visual"),
        _bench("speaker-visual", "spk-onscreen-50:visual-only", "visual"),
        _bench("instr-wild-visual", "instr-onscreen-50:visual-only", "visual"),
    ]
}


def get_setting(name: str) -> EvalSetting:
    if name not in SETTINGS:
        raise InvalidRequestError(f"unknown setting {name!r}; choose from {', '.join(SETTINGS)}")
    return SETTINGS[name]
