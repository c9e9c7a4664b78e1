"""`samaudio eval`: the whole harness on generated items with the tiny golden models, in this process, through a
real server and on two ranks (gloo), plus its errors.

Items are a tone (the reference) plus noise at awkward lengths and rates; the separating model is the golden one
(2 solver steps), the metrics are the golden Judge and CLAP folders and SI-SDR.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from server_fixtures import golden_server  # noqa: F401 - a fixture, used by name

pytest.importorskip("fast_bss_eval")

ITEMS = {  # id -> (seconds, rate, channels)
    "a-short": (0.9, 48000, 1),
    "b-stereo": (1.3, 44100, 2),
    "c-long": (2.1, 48000, 1),
}


def _write_items(root, setting: str, spans: bool = False) -> None:
    for n, (item, (seconds, rate, channels)) in enumerate(ITEMS.items()):
        folder = root / setting / item
        folder.mkdir(parents=True)
        t = np.arange(round(seconds * rate)) / rate
        tone = 0.3 * np.sin(2 * np.pi * (330 + 110 * n) * t)
        noise = 0.1 * np.random.default_rng(n).standard_normal(len(t))
        mix = np.stack([tone + noise * (c + 1) for c in range(channels)], axis=1)
        sf.write(folder / "mixture.wav", mix.astype(np.float32), rate, subtype="FLOAT")
        sf.write(folder / "reference.wav", np.repeat(tone[:, None], channels, 1).astype(np.float32), rate, subtype="FLOAT")
        (folder / "description.txt").write_text("a sine tone\n")
        if spans:
            (folder / "spans.json").write_text(json.dumps([[0.1, 0.5]]))


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-data")
    _write_items(root, "sfx")
    _write_items(root, "sfx-span", spans=True)
    return root


def _args(golden_dir, data, out, *extra: str) -> list[str]:
    return [
        "eval", "--setting", "sfx", "sfx-span", "--data", str(data), "--model", str(golden_dir), "--candidates", "1",
        "--steps", "2", "--metrics", "judge,clap,sisdr", "--judge", str(golden_dir / "judge"),
        "--clap", str(golden_dir / "clap" / "checkpoint.pt"), "--out", str(out), "--device", "cpu", "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def one_process(golden_dir, eval_data, tmp_path_factory):
    """Results of one in-process run through the `samaudio eval` command."""
    from samaudio_client.cli import main

    out = tmp_path_factory.mktemp("eval-out")
    assert main(_args(golden_dir, eval_data, out, "--plot")) == 0
    return out


COLUMNS = {"JudgeOverall", "JudgeFaithfulness", "JudgeRecall", "JudgePrecision", "CLAPSimilarity", "SISDR", "SISDRi", "SDR"}


def _rows(out, setting):
    from samaudio.eval.runner import read_rows

    return read_rows(out, setting)


def test_every_item_gets_a_row_with_every_metric_column(one_process):
    for setting in ("sfx", "sfx-span"):
        rows = _rows(one_process, setting)
        assert [r["id"] for r in rows] == sorted(ITEMS)
        for row in rows:
            assert COLUMNS <= set(row), row
            assert all(math.isfinite(row[c]) for c in COLUMNS)


def test_the_summary_is_the_per_column_mean_with_three_decimals(one_process):
    rows = _rows(one_process, "sfx")
    summary = json.loads((one_process / "sfx.json").read_text())
    assert set(summary) == COLUMNS
    for column, text in summary.items():
        assert text == f"{np.mean([r[column] for r in rows]):.3f}"
    csv = (one_process / "sfx.csv").read_text().splitlines()
    assert len(csv) == 1 + len(ITEMS) and csv[0].startswith("id,description,")
    assert (one_process / "distributions.png").stat().st_size > 1000
    assert set(json.loads((one_process / "timings.json").read_text())["sfx"]) == {"separate", "judge", "clap", "sisdr"}


def test_sisdr_is_fast_bss_eval_of_the_separated_target_against_the_reference(golden_dir, eval_data):
    import fast_bss_eval
    import torch

    from samaudio import SAMAudio, SAMAudioProcessor
    from samaudio.eval.data import read_item
    from samaudio.eval.metrics import SISDRMetric, Separated
    from samaudio.eval.separators import InProcessSeparator
    from samaudio.eval.settings import get_setting

    item = read_item(get_setting("sfx"), eval_data, "b-stereo")
    assert item.mixture.shape == (1, round(1.3 * 48000))  # mixed to mono, resampled to 48 kHz
    separator = InProcessSeparator(SAMAudio.from_pretrained(golden_dir), SAMAudioProcessor.from_pretrained(golden_dir),
                                   steps=2)
    target, _ = separator(item)
    row = SISDRMetric()([Separated(item.id, item.description, item.mixture, target, item.reference)])[0]
    n = item.reference.shape[-1]
    want = fast_bss_eval.si_sdr(item.reference.double(), target[..., :n].double(), zero_mean=True).item()
    base = fast_bss_eval.si_sdr(item.reference.double(), item.mixture.double(), zero_mean=True).item()
    assert row["SISDR"] == pytest.approx(want, abs=1e-9)
    assert row["SISDRi"] == pytest.approx(want - base, abs=1e-9)
    again, _ = separator(item)  # seeded by the item: the same target every time
    assert torch.equal(again, target)


def test_a_rerun_skips_done_items_and_keeps_their_rows(golden_dir, eval_data, one_process, tmp_path):
    import shutil

    from samaudio_client.cli import main

    out = tmp_path / "out"
    shutil.copytree(one_process, out)
    lines = out / "sfx.rows.jsonl"
    kept = lines.read_text().splitlines()
    lines.write_text("\n".join(kept[:2]) + "\n")  # as if interrupted after two items
    assert main(_args(golden_dir, eval_data, out)) == 0
    rows = _rows(out, "sfx")
    assert [r["id"] for r in rows] == sorted(ITEMS)
    assert len(lines.read_text().splitlines()) == len(ITEMS)  # only the missing item was appended
    assert rows == _rows(one_process, "sfx")  # and it came out the same


def test_two_ranks_give_the_numbers_of_one_process(golden_dir, eval_data, one_process, tmp_path):
    out = tmp_path / "ranks"
    args = _args(golden_dir, eval_data, out)[1:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "samaudio.eval", *args],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob("sfx.rows*.jsonl")) == ["sfx.rows.rank0.jsonl", "sfx.rows.rank1.jsonl"]
    for setting in ("sfx", "sfx-span"):
        two, one = _rows(out, setting), _rows(one_process, setting)
        assert [r["id"] for r in two] == [r["id"] for r in one]
        for a, b in zip(two, one):
            for column in COLUMNS:
                assert a[column] == pytest.approx(b[column], abs=1e-5), (setting, a["id"], column)
        assert json.loads((out / f"{setting}.json").read_text()) == json.loads((one_process / f"{setting}.json").read_text())


def test_through_a_server_every_item_is_separated_by_its_streaming_engine(golden_dir, eval_data, golden_server, tmp_path):
    from samaudio_client.cli import main

    _, port = golden_server
    out = tmp_path / "served"
    args = _args(golden_dir, eval_data, out, "--server", f"127.0.0.1:{port}")
    args[args.index("--metrics") + 1] = "sisdr"
    del args[args.index("--model") : args.index("--model") + 2]  # the server's model
    assert main(args) == 0
    rows = _rows(out, "sfx")
    assert [r["id"] for r in rows] == sorted(ITEMS)
    assert all(math.isfinite(r["SISDR"]) for r in rows)
    spans = _rows(out, "sfx-span")
    assert [r["id"] for r in spans] == sorted(ITEMS)


def test_a_setting_without_items_says_where_to_put_them(golden_dir, tmp_path):
    from samaudio.eval.data import DatasetUnavailableError, item_ids
    from samaudio.eval.settings import get_setting

    with pytest.raises(DatasetUnavailableError, match="instr-pro.*musdb18hq.zip.*mixture.wav"):
        item_ids(get_setting("instr-pro"), tmp_path)
    with pytest.raises(DatasetUnavailableError, match="facebook/sam-audio-bench"):
        item_ids(get_setting("speech"), tmp_path)


def test_a_metric_without_its_weights_is_named_with_how_to_get_them(tmp_path):
    from samaudio.eval.metrics import MetricUnavailableError, build_metrics

    with pytest.raises(MetricUnavailableError, match="judge.*sam-audio-judge"):
        build_metrics(["judge"], {"judge": "facebook/sam-audio-judge"})
    with pytest.raises(MetricUnavailableError, match="clap"):
        build_metrics(["clap"], {"clap": str(tmp_path / "missing.pt")})
    with pytest.raises(MetricUnavailableError, match="aesthetics"):
        build_metrics(["aesthetics"], {"aesthetics": None})  # the hub is unreachable in tests
    with pytest.raises(MetricUnavailableError, match="unknown metric 'sdr'"):
        build_metrics(["sdr"], {})


def test_aesthetics_loads_a_checkpoint_in_the_released_layout_and_scores_each_axis(tmp_path):
    """A random Audiobox Aesthetics model (the released architecture), saved as the released checkpoint.pt is."""
    import torch
    from audiobox_aesthetics.model.aes import AesMultiOutput

    from samaudio.eval.metrics import AestheticsMetric, Separated

    cfg = {"proj_num_layer": 1, "proj_ln": False, "proj_act_fn": "gelu", "proj_dropout": 0.0, "nth_layer": 13,
           "use_weighted_layer_sum": True, "precision": "32", "normalize_embed": True, "output_dim": 1}
    transform = {axis: {"mean": 5.0 + i, "std": 1.5} for i, axis in enumerate(["CE", "CU", "PC", "PQ"])}
    torch.manual_seed(0)
    model = AesMultiOutput(**cfg, target_transform=transform)
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "model_cfg": cfg,
                "target_transform": transform}, path)
    metric = AestheticsMetric(str(path))
    t = torch.arange(round(1.5 * 48000)) / 48000
    target = (0.3 * torch.sin(2 * torch.pi * 440 * t))[None]
    rows = metric([Separated("x", "a tone", target, target), Separated("y", "a tone", target, 0 * target)])
    assert [set(r) for r in rows] == [set(AestheticsMetric.columns)] * 2
    assert all(math.isfinite(v) for r in rows for v in r.values())
    assert rows[0] != rows[1]  # each item scored on its own target


def test_the_library_imports_no_client_package():
    """The server-backed separator is the thin client's (samaudio_client.evaluation), passed in by `samaudio eval`."""
    import ast
    from pathlib import Path

    import samaudio

    for path in Path(samaudio.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        assert not {m for m in imported if m.split(".")[0] == "samaudio_client"}, path


def test_the_server_backed_separator_imports_no_torch():
    """`samaudio eval --server`'s separator is the thin client's: its module loads on an install without torch."""
    import subprocess
    import sys

    code = "import sys; import samaudio_client.evaluation; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_library_eval_refuses_server_without_a_separator_naming_the_command_that_has_one(
    golden_dir, eval_data, tmp_path
):
    import argparse

    from samaudio.errors import InvalidRequestError
    from samaudio.eval.cli import add_arguments, main

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = _args(golden_dir, eval_data, tmp_path / "out", "--server", "127.0.0.1:1")[1:]
    args[args.index("--metrics") + 1] = "sisdr"
    with pytest.raises(InvalidRequestError, match="samaudio eval --server 127.0.0.1:1"):
        main(parser.parse_args(args))
