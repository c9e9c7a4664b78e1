"""The ModernBERT text tower of PE-A-Frame and the SAM-Audio Judge, and their tokenizer.

Both official models keep transformers' `ModernBertModel` under `text_model.*` and read one intermediate hidden
state; we use the same class, so the checkpoint keys are transformers' and load unchanged. Checked against the
golden files (made with transformers 5.23): transformers 5.24's ModernBERT reproduces `text_hidden` exactly.

Legend:
    B   descriptions        S   tokens        Ht  ModernBERT hidden size
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samaudio.errors import ConfigError, InvalidRequestError, ModelUnavailableError

MAX_LENGTH = 512  # tokenizer truncation of both official processors


def build_modernbert(fields: dict[str, Any], where: str) -> nn.Module:
    """A randomly initialised transformers `ModernBertModel` from `ModernBertConfig` kwargs (weights load later)."""
    from transformers import ModernBertConfig, ModernBertModel

    try:
        config = ModernBertConfig(**fields)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where} is not a valid ModernBertConfig: {e}") from e
    return ModernBertModel(config)


def pooled_text_feature(
    text_model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, nth_text_layer: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen hidden state (B, S, Ht) and its first token, the CLS (B, Ht).

    `hidden_states[n]` with 0 the embedding output; None takes `last_hidden_state` (after the final norm).
    """
    out = text_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    if nth_text_layer is None:
        hidden = out.last_hidden_state
    else:
        n = len(out.hidden_states)
        if not -n <= nth_text_layer < n:
            raise ConfigError(f"nth_text_layer is {nth_text_layer} but the text model has {n} hidden states")
        hidden = out.hidden_states[nth_text_layer]
    return hidden, hidden[:, 0]


def load_tokenizer(folder: str | os.PathLike):
    """The tokenizer saved in `folder` (tokenizer.json / tokenizer_config.json), as AutoTokenizer reads it."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise ModelUnavailableError(
            f"no tokenizer in {folder}: the folder needs tokenizer.json and tokenizer_config.json ({e})"
        ) from e


def tokenize(tokenizer, descriptions: list[str]) -> dict[str, torch.Tensor]:
    """`input_ids`, `attention_mask` (B, S): padded to the longest, truncated at 512, as both processors do."""
    if isinstance(descriptions, str) or not all(isinstance(d, str) for d in descriptions):
        raise InvalidRequestError("descriptions must be a list of strings, one per audio")
    enc = tokenizer(
        list(descriptions), padding="longest", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()
