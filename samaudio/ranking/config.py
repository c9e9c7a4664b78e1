"""Ranker configurations, field for field the official ones (`sam_audio/model/config.py`), and their parser.

`SAMAudioConfig.visual_ranker` / `text_ranker` hold None or a dict with a `kind` key, as in an official
`config.json`:
    {"kind": "clap", "checkpoint": null}
    {"kind": "ensemble", "rankers": {"clap": [{"kind": "clap"}, 1.0], "judge": [{"kind": "judge"}, 2.0]}}
`parse_ranker_config` reads such a dict without changing it (the official one pops `kind` from the caller's dict,
so parsing a config twice fails the second time).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from samaudio.errors import ConfigError


@dataclass
class ImageBindRankerConfig:
    checkpoint: str | None = None  # None: the released ImageBind-huge weights (imagebind_huge.pth)


@dataclass
class ClapRankerConfig:
    checkpoint: str | None = None  # None: hub lukewys/laion_clap, file 630k-best.pt


@dataclass
class JudgeRankerConfig:
    checkpoint_or_model_id: str = "facebook/sam-audio-judge"


@dataclass
class SoundActivityRankerConfig:
    threshold_mode: str = "rel_to_max"
    sil_threshold: float = -40
    metric: str = "iou"


@dataclass
class EnsembleRankerConfig:
    # name -> (member config, raw weight); the sum of weight * score is taken in this (config) order
    rankers: dict[str, tuple[Any, float]] = field(default_factory=dict)


RankerConfig = ImageBindRankerConfig | ClapRankerConfig | JudgeRankerConfig | SoundActivityRankerConfig | EnsembleRankerConfig

KINDS: dict[str, type] = {
    "imagebind": ImageBindRankerConfig,
    "clap": ClapRankerConfig,
    "judge": JudgeRankerConfig,
    "sound_activity": SoundActivityRankerConfig,
    "ensemble": EnsembleRankerConfig,
}


def _fields(cls: type, values: dict[str, Any], where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where} ({cls.__name__}); known keys: {', '.join(sorted(known))}")
    return cls(**values)


def parse_ranker_config(config: dict[str, Any] | RankerConfig | None, where: str = "ranker") -> RankerConfig | None:
    """The config object for a ranker dict (or None). The caller's dict is left as it was.

    Unlike the official parser, an unknown `kind` is a ConfigError rather than a silent None (which the official
    `create_ranker` then rejects with a bare assert).
    """
    if config is None or dataclasses.is_dataclass(config):
        return config
    if not isinstance(config, dict):
        raise ConfigError(f"{where} must be None or a mapping with a 'kind' key, got {type(config).__name__}")
    values = dict(config)
    kind = values.pop("kind", None)
    if kind not in KINDS:
        raise ConfigError(f"{where} has kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if kind != "ensemble":
        return _fields(KINDS[kind], values, where)
    members = values.pop("rankers", None)
    if values:
        raise ConfigError(f"unknown key {sorted(values)[0]!r} in {where} (EnsembleRankerConfig); known keys: rankers")
    if not isinstance(members, dict) or not members:
        raise ConfigError(f"{where} is an ensemble but 'rankers' is not a non-empty mapping name -> [config, weight]")
    parsed = {}
    for name, entry in members.items():
        if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[1], (int, float)):
            raise ConfigError(f"{where}.rankers.{name} must be [member config, weight], got {entry!r}")
        parsed[name] = (parse_ranker_config(entry[0], f"{where}.rankers.{name}"), float(entry[1]))
    return EnsembleRankerConfig(rankers=parsed)
