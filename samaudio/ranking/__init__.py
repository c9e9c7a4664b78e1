"""Candidate re-ranking: rankers that score K candidate separations per item (official sam_audio/ranking).

`create_ranker(config)` builds the ranker a config names (see `config.py` for the forms); each ranker module is
imported only when its kind is asked for, so plain separation never loads transformers' RoBERTa, the judge or
ImageBind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from samaudio.errors import ConfigError
from samaudio.ranking.config import (
    ClapRankerConfig,
    EnsembleRankerConfig,
    ImageBindRankerConfig,
    JudgeRankerConfig,
    RankerConfig,
    SoundActivityRankerConfig,
    parse_ranker_config,
)
from samaudio.ranking.ranker import EnsembleRanker, Ranker

__all__ = [
    "ClapRankerConfig",
    "EnsembleRanker",
    "EnsembleRankerConfig",
    "ImageBindRankerConfig",
    "JudgeRankerConfig",
    "Ranker",
    "RankerConfig",
    "SoundActivityRankerConfig",
    "create_ranker",
    "parse_ranker_config",
]


def create_ranker(config: dict[str, Any] | RankerConfig | None, *, root: str | Path | None = None) -> Ranker | None:
    """The ranker for `config` (a dict with `kind`, or a parsed config), None for None.

    Relative checkpoint paths are taken from `root` (the folder of the config.json that names them)."""
    cfg = parse_ranker_config(config)
    if cfg is None:
        return None
    if isinstance(cfg, ClapRankerConfig):
        from samaudio.ranking.clap import ClapRanker

        return ClapRanker(cfg, root=root)
    if isinstance(cfg, ImageBindRankerConfig):
        from samaudio.ranking.imagebind import ImageBindRanker

        return ImageBindRanker(cfg, root=root)
    if isinstance(cfg, JudgeRankerConfig):
        from samaudio.ranking.judge import JudgeRanker

        return JudgeRanker(cfg, root=root)
    if isinstance(cfg, EnsembleRankerConfig):
        members = {name: create_ranker(member, root=root) for name, (member, _) in cfg.rankers.items()}
        return EnsembleRanker(members, {name: weight for name, (_, weight) in cfg.rankers.items()})
    # official create_ranker asserts here: the sound-activity ranker scores one waveform per item against given
    # spans, which separate() never passes, so it cannot rank candidates
    raise ConfigError(
        f"ranker kind 'sound_activity' cannot rank candidates (it scores (B,) items against spans that separate() "
        f"does not pass; the official create_ranker rejects it too): use 'clap', 'judge', 'imagebind' or 'ensemble'"
    )
