"""Shared fixtures: the golden case folder and its files, and one tiny golden model per session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Golden tests take their case from SAMAUDIO_GOLDEN and must hold for any case made the same way.
GOLDEN_DIR = Path(os.environ.get("SAMAUDIO_GOLDEN", ROOT.parent / "shared" / "golden" / "public"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The tiny test models are far too small to gain from intra-op threads, and the servers the tests start run
# their own threads beside pytest's: one thread each keeps a 2-core machine from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    try:
        import torch
    except ImportError:  # the thin install runs no model tests
        return
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not (GOLDEN_DIR / "config.json").exists():
        pytest.fail(f"golden case folder {GOLDEN_DIR} has no config.json: set SAMAUDIO_GOLDEN")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def golden(golden_dir):
    """`golden("codec")` -> (tensors dict, meta dict) of `<case>/codec.safetensors`."""
    from safetensors import safe_open

    cache: dict[str, tuple[dict, dict]] = {}

    def load(name: str):
        if name not in cache:
            with safe_open(str(golden_dir / f"{name}.safetensors"), framework="pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
                meta = json.loads((f.metadata() or {}).get("meta", "{}"))
            cache[name] = (tensors, meta)
        return cache[name]

    return load


@pytest.fixture(scope="session")
def golden_keys(golden_dir) -> list[tuple[str, list[int], str]]:
    """`keys.txt`: (name, shape, dtype) in state_dict order."""
    rows = []
    for line in (golden_dir / "keys.txt").read_text().splitlines():
        if line.strip():
            name, shape, dtype = line.split("\t")
            rows.append((name, json.loads(shape), dtype))
    return rows


@pytest.fixture(scope="session")
def thin_python(tmp_path_factory) -> str:
    """The python of an install without torch: SAMAUDIO_THIN_PYTHON (CI makes it), or a venv made here once."""
    import subprocess
    import venv

    python = os.environ.get("SAMAUDIO_THIN_PYTHON")
    if not python:
        folder = tmp_path_factory.mktemp("venv-thin")
        venv.create(folder, with_pip=True)
        python = str(folder / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "-q", str(ROOT)], check=True)
    return python


@pytest.fixture(scope="session")
def golden_model(golden_dir):
    """The golden tiny model, loaded once per session. Read-only: tests must not change its weights or mode."""
    from samaudio import SAMAudio

    return SAMAudio.from_pretrained(golden_dir)


@pytest.fixture(scope="session")
def golden_processor(golden_dir):
    from samaudio import SAMAudioProcessor

    return SAMAudioProcessor.from_pretrained(golden_dir)


@pytest.fixture(scope="session")
def quality_model(golden_dir):
    """The golden model with the span predictor of `config_spans.json` and the text ranker of `config_rerank.json`
    (the quality path of issue 16), loaded once per session. Read-only."""
    from samaudio import SAMAudio

    spans = json.loads((golden_dir / "config_spans.json").read_text())
    rerank = json.loads((golden_dir / "config_rerank.json").read_text())
    return SAMAudio.from_pretrained(
        golden_dir, span_predictor=spans["span_predictor"], text_ranker=rerank["text_ranker"]
    )
