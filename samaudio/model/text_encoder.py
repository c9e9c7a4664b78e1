"""The T5 text encoder: descriptions -> token features and a key mask for the DiT's cross-attention.

The official model keeps transformers' `T5EncoderModel` and tokenizer, loaded by name (a hub id such as
"t5-base", or a folder), never from the SAM-Audio checkpoint. We do the same, so the state_dict keys are
transformers' (`model.shared.weight`, `model.encoder.block.{i}...`) and t5-base loads unchanged.

Legend:
    B   descriptions in one call
    S   tokens of the longest description, `</s>` included
    Dt  T5 d_model (= text_encoder.dim)
"""

from __future__ import annotations

import logging
import os
import string
from pathlib import Path

import torch
from torch import nn

from samaudio.errors import ConfigError, InvalidRequestError, ModelUnavailableError
from samaudio.model.config import T5EncoderConfig

logger = logging.getLogger(__name__)

# T5 conventions, shared by t5-base and the tokenizer `random` generates.
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
_SPECIALS = ["<pad>", "</s>", "<unk>"]
_WORD_START = "\u2581"  # sentencepiece's "▁": marks the start of a word


def _char_tokenizer(model_max_length: int = 512):
    """A T5-style tokenizer made in code: one piece per printable ASCII character, no file, no network.

    Ids: <pad> 0, </s> 1, <unk> 2, then "▁" and the characters. Like t5-base it splits on whitespace with
    sentencepiece's "▁" word marker, maps unknown characters to <unk>, appends </s> and pads right with 0.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = [_WORD_START] + [c for c in string.printable if not c.isspace()]
    vocab = [(tok, 0.0) for tok in _SPECIALS] + [(c, -1.0) for c in chars]
    tok = Tokenizer(models.Unigram(vocab, unk_id=UNK_ID, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_WORD_START, prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement=_WORD_START, prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", EOS_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=model_max_length,
        padding_side="right",
    )


def _resolve(name: str, root: Path | None) -> str:
    """A folder beside config.json (`root / name`) wins, then a folder `name`, else `name` is a hub id."""
    if root is not None and (Path(root) / name).is_dir():
        return str(Path(root) / name)
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local)
    return name


def _fill_tied_embedding(module, state_dict, prefix, *args) -> None:
    """Accept a state_dict holding either tied name: t5-base stores `shared.weight`, ours hold both."""
    shared, embed = prefix + "model.shared.weight", prefix + "model.encoder.embed_tokens.weight"
    if shared in state_dict and embed not in state_dict:
        state_dict[embed] = state_dict[shared]
    elif embed in state_dict and shared not in state_dict:
        state_dict[shared] = state_dict[embed]


class T5TextEncoder(nn.Module):
    """`model`: a transformers `T5EncoderModel` (eval mode); `tokenizer`: its tokenizer (not a module)."""

    def __init__(self, model: nn.Module, tokenizer, max_length: int | None = 512, pad_mode: str = "longest"):
        super().__init__()
        self.model = model  # name forced by the checkpoint keys `text_encoder.model.*`
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_mode = pad_mode
        self.register_load_state_dict_pre_hook(_fill_tied_embedding)

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    @classmethod
    def from_config(cls, cfg: T5EncoderConfig, root: str | Path | None = None) -> T5TextEncoder:
        """Load T5 and its tokenizer by `cfg.name`: `root / name` if that folder exists, a folder, or a hub id.

        `root` is the folder of the SAM-Audio `config.json`, so a checkpoint can ship its own T5 beside it.
        Raises `ModelUnavailableError` when the name can be had neither locally nor from the hub.
        """
        from transformers import AutoTokenizer, T5EncoderModel

        source = _resolve(cfg.name, root)
        try:
            model = T5EncoderModel.from_pretrained(source)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as e:
            offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no")
            folders = [str(Path(root) / cfg.name)] if root is not None else []
            looked = " or ".join(repr(f) for f in [*folders, cfg.name])
            raise ModelUnavailableError(
                f"cannot load the T5 text encoder {cfg.name!r}: no folder {looked}, and the hub "
                f"{'is offline (HF_HUB_OFFLINE=1)' if offline else 'failed'}: {e} Fix: download it once while online "
                f"(`hf download {cfg.name}`), or set text_encoder.name in config.json to a folder holding the T5 "
                "config.json, weights and tokenizer files"
            ) from e
        if model.config.d_model != cfg.dim:
            raise ConfigError(
                f"text_encoder.dim is {cfg.dim} but the T5 {cfg.name!r} has d_model {model.config.d_model}: "
                f"set text_encoder.dim to {model.config.d_model}"
            )
        logger.info("loaded T5 text encoder %s from %s (d_model %d)", cfg.name, source, model.config.d_model)
        # Dropout off, as transformers' from_pretrained leaves T5 in the official model.
        return cls(model, tokenizer, max_length=cfg.max_length, pad_mode=cfg.pad_mode).eval()

    @classmethod
    def random(
        cls,
        config: T5EncoderConfig | int,
        *,
        num_layers: int = 2,
        num_heads: int = 4,
        d_kv: int | None = None,
        d_ff: int | None = None,
        max_length: int | None = None,
        pad_mode: str | None = None,
        seed: int | None = None,
    ) -> T5TextEncoder:
        """A randomly initialised T5 encoder of width `config.dim` (or `config` itself when an int) with a
        character tokenizer made in code.

        Needs no file and no network: for demos and tests. `max_length` and `pad_mode` default to the config's
        (512, "longest" for an int). `seed` makes the weights reproducible without touching the global RNG.
        """
        from transformers import T5Config, T5EncoderModel

        if isinstance(config, T5EncoderConfig):
            dim = config.dim
            max_length = config.max_length if max_length is None else max_length
            pad_mode = pad_mode or config.pad_mode
        else:
            dim = int(config)
            max_length = 512 if max_length is None else max_length
            pad_mode = pad_mode or "longest"
        if dim < 1 or num_heads < 1 or num_layers < 1:
            raise ConfigError(f"a T5 needs dim, num_heads, num_layers >= 1, got {dim}, {num_heads}, {num_layers}")
        tokenizer = _char_tokenizer(max_length or 512)
        t5_config = T5Config(
            vocab_size=len(tokenizer),
            d_model=dim,
            d_kv=d_kv or max(1, dim // num_heads),
            d_ff=d_ff or 2 * dim,
            num_layers=num_layers,
            num_heads=num_heads,
            feed_forward_proj="relu",  # as t5-base
            pad_token_id=PAD_ID,
            eos_token_id=EOS_ID,
            decoder_start_token_id=PAD_ID,
            is_encoder_decoder=False,
            use_cache=False,
            tie_word_embeddings=True,
        )
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            model = T5EncoderModel(t5_config)
        return cls(model, tokenizer, max_length=max_length, pad_mode=pad_mode).eval()

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the T5 (config.json, model.safetensors) and its tokenizer files: `from_config` reads them back."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        return folder

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids (B, S) int64, attention_mask (B, S) int64) on CPU, exactly as the official encoder."""
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise InvalidRequestError(
                f"texts must be a list of strings, got {type(texts).__name__}: wrap one description as [text]"
            )
        if len(texts) == 0:
            raise InvalidRequestError('texts is empty: give at least one description ("" is allowed)')
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise InvalidRequestError(
                f"texts[{bad[0]}] is a {type(texts[bad[0]]).__name__}, not a str: every description must be a string"
            )
        enc = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, padding=self.pad_mode, return_tensors="pt"
        )
        return enc["input_ids"], enc["attention_mask"]

    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> features (B, S, Dt) in T5's dtype, mask (B, S) bool (True = real token, </s> included)."""
        input_ids, attention_mask = self.tokenize(texts)  # (B, S), (B, S)
        device = next(self.model.parameters()).device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        # Padded positions come out non-zero (their queries still see the valid keys): callers mask them.
        features = self.model(input_ids=input_ids, attention_mask=attention_mask)["last_hidden_state"]  # (B, S, Dt)
        return features, attention_mask.bool()
