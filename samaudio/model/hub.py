"""Where checkpoints come from: one resolver for a local folder or a Hugging Face hub id.

Official repos (`facebook/sam-audio-small`, `-base`, `-large` and the `-tv` variants) hold `config.json` and a
plain `torch.save` state_dict `checkpoint.pt` without the text encoder. Our own folders hold `config.json` and
`model.safetensors` (written by `SAMAudio.save_pretrained`), optionally with the T5 in a subfolder.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch

from samaudio.errors import CheckpointError, ModelUnavailableError

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHT_NAMES = ("model.safetensors", "checkpoint.pt")  # ours first, then the official format


def _access_help(repo_id: str) -> str:
    return (
        f"{repo_id} is a gated Hugging Face repo: request access on its model page, run `hf auth login` (or set "
        f"HF_TOKEN), and download it once while online (unset HF_HUB_OFFLINE), or pass a local folder holding "
        f"config.json and checkpoint.pt / model.safetensors"
    )


def resolve_folder(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    config_only: bool = False,
    extra_patterns: tuple[str, ...] = (),
    cache_dir: str | os.PathLike | None = None,
    token: str | None = None,
) -> Path:
    """A local folder as is; otherwise a snapshot of the hub repo (its config, and weights unless config_only).

    `extra_patterns` names further files the snapshot needs (a tokenizer's, for the span predictor and judge).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise CheckpointError(f"{path} is a folder but holds no {CONFIG_NAME}")
        return path
    repo_id = str(name_or_path)
    if path.exists() or repo_id.startswith((".", "/", "~")) or repo_id.count("/") > 1:
        raise ModelUnavailableError(f"no model folder at {repo_id}: expected a folder holding {CONFIG_NAME}")

    from huggingface_hub import snapshot_download

    patterns = ([CONFIG_NAME] if config_only else [CONFIG_NAME, *WEIGHT_NAMES]) + list(extra_patterns)
    with _hub_errors(repo_id):
        return Path(
            snapshot_download(
                repo_id=repo_id, revision=revision, allow_patterns=patterns, cache_dir=cache_dir, token=token
            )
        )


def download_file(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | None = None,
) -> Path:
    """One file of a hub repo (a ranker's weights), with the same named errors as `resolve_folder`."""
    from huggingface_hub import hf_hub_download

    with _hub_errors(repo_id):
        return Path(
            hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, cache_dir=cache_dir, token=token)
        )


@contextlib.contextmanager
def _hub_errors(repo_id: str):
    """Turn huggingface_hub's errors into ModelUnavailableError with the fix."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        yield
    except LocalEntryNotFoundError as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else "it cannot be reached"
        raise ModelUnavailableError(f"cannot load {repo_id}: {why}. {_access_help(repo_id)}") from e
    except GatedRepoError as e:
        raise ModelUnavailableError(f"access to {repo_id} is not granted. {_access_help(repo_id)}") from e
    except RepositoryNotFoundError as e:
        raise ModelUnavailableError(f"no hub repo {repo_id} (or no access to it). {_access_help(repo_id)}") from e
    except HfHubHTTPError as e:
        raise ModelUnavailableError(f"cannot download {repo_id}: {e}. {_access_help(repo_id)}") from e


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state_dict in `folder`: `model.safetensors` if present, else the official `checkpoint.pt`."""
    for name in WEIGHT_NAMES:
        file = folder / name
        if not file.is_file():
            continue
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(file))
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt or truncated files raise many different types
            raise CheckpointError(f"cannot read checkpoint {file}: {type(e).__name__}: {e}") from e
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]  # some trainers nest the weights one level down
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{file} does not hold a state_dict (a mapping of names to tensors)")
        return state
    raise CheckpointError(f"{folder} holds no weights: expected one of {', '.join(WEIGHT_NAMES)}")


def check_state_dict(
    state: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    what: str,
    fix: str,
    optional_prefixes: tuple[str, ...] = (),
) -> None:
    """Compare a checkpoint's keys and shapes with a model's before anything loads: one error names them all.

    Missing keys, unexpected keys and shape mismatches are each counted and the first few named, so a config
    that does not fit its weights fails here and not deep inside a forward pass.
    """
    missing = [k for k in expected if k not in state and not k.startswith(optional_prefixes)]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es), first {'; '.join(wrong[:5])}")
    if missing:
        problems.append(f"{len(missing)} missing key(s), first {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), first {', '.join(unexpected[:5])}")
    if problems:
        raise CheckpointError(f"{what} does not fit its config: " + " | ".join(problems) + f". {fix}")
