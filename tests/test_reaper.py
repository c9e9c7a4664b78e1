"""The REAPER script (clients/reaper/samaudio_separate.lua) in a fake REAPER, run by lua5.4.

`clients/reaper/tests/fake_reaper.lua` simulates the project (tracks, items, takes, the time selection,
ExtState, dialogs, message boxes, the gfx window) and records what the script does; its process start is
real, so the script runs the real `samaudio separate` command line against a real loopback server on the
golden model. Stand-in programs appear only where the test is about the script's own bookkeeping: one that
never finishes (something to cancel), one that writes its stems at once (file names, clipping).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from server_fixtures import start_server, stream_defaults

ROOT = Path(__file__).resolve().parents[1]
REAPER_DIR = ROOT / "clients" / "reaper"
SCRIPT = REAPER_DIR / "samaudio_separate.lua"
DRIVER = REAPER_DIR / "tests" / "run_scenario.lua"
TOKEN = "reaper-test-token"
LUA_TIMEOUT = 240  # seconds of wall time for one scenario, a safety net only


# ------------------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="session")
def lua() -> str:
    path = shutil.which("lua5.4")
    if path is None:
        pytest.fail("lua5.4 is not installed: the REAPER script tests need it (apt-get install lua5.4; .ci/run does)")
    return path


@pytest.fixture(scope="session")
def samaudio_program() -> Path:
    """The `samaudio` console script: of the thin install when CI made one, else of this interpreter's venv."""
    thin = os.environ.get("SAMAUDIO_THIN_PYTHON")
    folder = Path(thin).parent if thin else Path(sys.executable).parent
    program = folder / ("samaudio.exe" if os.name == "nt" else "samaudio")
    if not program.exists():
        pytest.fail(f"no samaudio program at {program}: install the project (pip install -e .) first")
    return program


@pytest.fixture(scope="module")
def server_address(golden_model, golden_processor) -> str:
    """The golden model on loopback, with a token, short windows and 2 solver steps (fast)."""
    server, port = start_server(
        golden_model, golden_processor, token=TOKEN,
        defaults=stream_defaults(chunk_seconds=1.0, overlap_seconds=0.4, solver_steps=2),
    )
    yield f"127.0.0.1:{port}"
    server.stop(0)


def lua_string(text: str) -> str:
    """A Lua string literal holding exactly `text`'s UTF-8 bytes (every other byte as a \\ddd escape)."""
    plain = set(range(32, 127)) - set(b'"\\')
    return '"' + "".join(chr(b) if b in plain else f"\\{b:03d}" for b in text.encode()) + '"'


def to_lua(value: Any) -> str:
    """A Python value as a Lua literal (dicts become tables with string keys, None becomes nil)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return lua_string(str(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_string(k)}] = {to_lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    raise TypeError(f"cannot write {type(value)} as Lua")


def run_reaper(lua: str, tmp_path: Path, **scenario: Any) -> dict:
    """Run the script in the fake REAPER on `scenario`; returns the report (see fake_reaper.lua)."""
    report = tmp_path / "report.json"
    scenario.setdefault("project_path", tmp_path / "media")
    scenario.update(script=SCRIPT, report=report)
    scenario_file = tmp_path / "scenario.lua"
    scenario_file.write_text("return " + to_lua(scenario) + "\n")
    jobs = tmp_path / "jobs"  # the script's temp folder (TMPDIR): the job folders go there
    jobs.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(jobs)}
    done = subprocess.run(
        [lua, str(DRIVER), str(scenario_file)], capture_output=True, text=True, timeout=LUA_TIMEOUT, env=env
    )
    assert done.returncode == 0, f"the Lua driver failed:\n{done.stdout}\n{done.stderr}"
    result = json.loads(report.read_text())
    result["jobs_left"] = sorted(p.name for p in jobs.iterdir())
    return result


def write_wav(path: Path, seconds: float, sample_rate: int, channels: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    frames = round(seconds * sample_rate)
    t = np.arange(frames)[:, None] / sample_rate  # (frames, 1)
    tones = 0.3 * np.sin(2 * np.pi * 220 * t * np.arange(1, channels + 1))  # (frames, channels)
    audio = tones + 0.05 * rng.standard_normal((frames, channels))
    sf.write(str(path), audio.astype(np.float32), sample_rate, subtype="FLOAT")
    return path


def item(file: Path, position: float, length: float, startoffs: float = 0.0, **take: Any) -> dict:
    info = sf.info(str(file)) if file.exists() else None
    take = {"file": file, "source_length": info.duration if info else 10.0, "startoffs": startoffs, **take}
    return {"position": position, "length": length, "selected": True, "take": take}


def answers(
    description: str, server: str, token: str = "", span: str = "n", program: Path | str = "samaudio", quality="fast",
    null_sum: str = "n",
) -> list:
    """What the user types into the dialog's seven fields."""
    return [description, server, token, span, null_sum, str(program), quality]


def assert_clean(report: dict) -> None:
    """Nothing went wrong in the fake, the window is closed, the job folder is gone."""
    assert report["errors"] == []
    assert report["gfx"]["open"] is False
    assert report["jobs_left"] == []
    assert report["ui_refresh"] == 0
    assert "samaudio/running_job" not in report["extstate"]


def assert_project_untouched(report: dict, track_names: list[str]) -> None:
    assert [t["name"] for t in report["tracks"]] == track_names
    assert report["undo"] == []
    assert report["changes_outside_undo"] == []


def stems_of(report: dict) -> tuple[dict, dict]:
    """The (target, residual) tracks the script added, by name."""
    by_name = {t["name"]: t for t in report["tracks"]}
    return by_name["snare drum (target)"], by_name["snare drum (residual)"]


def run_cli(program: Path, out_dir: Path, *args: str) -> tuple[np.ndarray, np.ndarray]:
    """The same separation by hand: `samaudio separate ARGS --out-dir OUT` -> (target, residual)."""
    env = {**os.environ, "SAMAUDIO_TOKEN": TOKEN}
    done = subprocess.run([str(program), "separate", *args, "--out-dir", str(out_dir), "-q"], capture_output=True,
                          text=True, env=env, timeout=LUA_TIMEOUT)
    assert done.returncode == 0, done.stderr
    target, residual = (Path(p) for p in done.stdout.split())
    return sf.read(str(target), dtype="float32")[0], sf.read(str(residual), dtype="float32")[0]


# ------------------------------------------------------------------------------------------------------------
# Separating: the real command line against the real server


def test_reaper_puts_the_time_selection_stems_on_new_tracks_below_the_source(
    lua, tmp_path, server_address, samaudio_program
):
    src = write_wav(tmp_path / "drums.wav", 4.0, 44100, 2)
    tracks = [
        {"name": "Vox"},
        {"name": "Drums", "items": [item(src, position=10.0, length=3.0, startoffs=0.5)]},
        {"name": "Bass"},
    ]
    report = run_reaper(
        lua, tmp_path, tracks=tracks, time_selection=[10.5, 11.13],
        dialogs=[answers("snare drum", server_address, TOKEN, "n", samaudio_program)],
    )

    assert_clean(report)
    assert report["messages"] == []
    names = [t["name"] for t in report["tracks"]]
    assert names == ["Vox", "Drums", "snare drum (target)", "snare drum (residual)", "Bass"]
    target, residual = stems_of(report)
    for track, kind in ((target, "target"), (residual, "residual")):
        (placed,) = track["items"]
        assert placed["position"] == pytest.approx(10.5, abs=1e-9)
        assert placed["length"] == pytest.approx(0.63, abs=1e-9)
        (take,) = placed["takes"]
        assert take["name"] == f"snare drum ({kind})"
        path = Path(take["file"])
        assert path.parent == tmp_path / "media" and path.name == f"drums - snare drum - {kind}.wav"
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames) == (44100, 2, round(0.63 * 44100))
    one_step = {"kind": "end", "desc": 'samaudio: separate "snare drum"', "flags": -1}
    assert report["undo"] == [{"kind": "begin"}, one_step]
    assert report["changes_outside_undo"] == []
    assert "100%" in report["progress"]


def test_reaper_puts_several_sounds_from_the_real_server_in_a_folder_that_sums_to_the_selection(
    lua, tmp_path, server_address, samaudio_program
):
    src = write_wav(tmp_path / "band.wav", 3.0, 48000, 1, seed=5)
    report = run_reaper(
        lua, tmp_path, tracks=[{"name": "Band", "items": [item(src, position=4.0, length=3.0)]}],
        time_selection=[4.5, 5.7],
        dialogs=[answers("a chirp; low hum", server_address, TOKEN, "n", samaudio_program, null_sum="y")],
    )

    assert_clean(report)
    assert report["messages"] == []
    layout = [(t["name"], t["folder_depth"]) for t in report["tracks"]]
    assert layout == [("Band", 0), ("samaudio: a chirp, low hum", 1), ("a chirp", 0), ("low hum", 0), ("residual", -1)]
    stems = []
    for track in report["tracks"][2:]:
        (placed,) = track["items"]
        assert placed["position"] == pytest.approx(4.5) and placed["length"] == pytest.approx(1.2)
        stems.append(sf.read(placed["takes"][0]["file"], dtype="float64")[0])
    selection = sf.read(str(src), dtype="float64")[0][24000:24000 + 57600]
    np.testing.assert_allclose(stems[0] + stems[1] + stems[2], selection, atol=1e-7, rtol=0)  # null-sum
    assert [u["kind"] for u in report["undo"]] == ["begin", "end"]
    assert "100%" in report["progress"]


def test_reaper_sends_the_selection_s_place_in_the_source_file(lua, tmp_path, server_address, samaudio_program):
    # The item starts 0.5 s into its file and sits at 10 s: the selection 10.5-11.13 s is 1.0-1.63 s of the file.
    src = write_wav(tmp_path / "drums.wav", 4.0, 48000, 1, seed=3)
    report = run_reaper(
        lua, tmp_path, tracks=[{"name": "Drums", "items": [item(src, 10.0, 3.0, startoffs=0.5)]}],
        time_selection=[10.5, 11.13], dialogs=[answers("snare drum", server_address, TOKEN, "n", samaudio_program)],
    )
    assert_clean(report)
    target_track, residual_track = stems_of(report)
    got_target = sf.read(target_track["items"][0]["takes"][0]["file"], dtype="float32")[0]
    got_residual = sf.read(residual_track["items"][0]["takes"][0]["file"], dtype="float32")[0]

    want_target, want_residual = run_cli(
        samaudio_program, tmp_path / "by_hand", str(src), "--text", "snare drum", "--server", server_address,
        "--start", "1.0", "--duration", "0.63",
    )
    np.testing.assert_allclose(got_target, want_target, atol=1e-5)
    np.testing.assert_allclose(got_residual, want_residual, atol=1e-5)


def test_reaper_separates_the_whole_item_when_there_is_no_time_selection(
    lua, tmp_path, server_address, samaudio_program
):
    src = write_wav(tmp_path / "take.wav", 2.0, 48000, 1)
    report = run_reaper(
        lua, tmp_path, tracks=[{"name": "Drums", "items": [item(src, position=3.25, length=0.9, startoffs=0.4)]}],
        dialogs=[answers("snare drum", server_address, TOKEN, "n", samaudio_program)],
    )
    assert_clean(report)
    assert report["messages"] == []
    for track in stems_of(report):
        (placed,) = track["items"]
        assert (placed["position"], placed["length"]) == pytest.approx((3.25, 0.9), abs=1e-9)
        info = sf.info(placed["takes"][0]["file"])
        assert (info.samplerate, info.channels, info.frames) == (48000, 1, round(0.9 * 48000))


def test_reaper_span_mode_sends_the_whole_item_with_the_selection_as_a_positive_span(
    lua, tmp_path, server_address, samaudio_program
):
    src = write_wav(tmp_path / "take.wav", 3.0, 48000, 1, seed=5)
    report = run_reaper(
        lua, tmp_path, tracks=[{"name": "Drums", "items": [item(src, position=2.0, length=0.95, startoffs=0.7)]}],
        time_selection=[2.2, 2.6], dialogs=[answers("snare drum", server_address, TOKEN, "y", samaudio_program)],
    )
    assert_clean(report)
    target_track, residual_track = stems_of(report)
    for track in (target_track, residual_track):
        (placed,) = track["items"]
        assert (placed["position"], placed["length"]) == pytest.approx((2.0, 0.95), abs=1e-9)
        assert sf.info(placed["takes"][0]["file"]).frames == round(0.95 * 48000)

    # The region is the whole item (0.7 s into the file, 0.95 s long); the selection 2.2-2.6 s plays 0.9-1.3 s
    # of the file, and the command line takes spans on the file's timeline.
    want_target, _ = run_cli(
        samaudio_program, tmp_path / "by_hand", str(src), "--text", "snare drum", "--server", server_address,
        "--start", "0.7", "--duration", "0.95", "--span", "+0.9:1.3",
    )
    got_target = sf.read(target_track["items"][0]["takes"][0]["file"], dtype="float32")[0]
    np.testing.assert_allclose(got_target, want_target, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Failures of the command line are shown with its message


def test_reaper_shows_the_server_s_message_when_the_token_is_wrong(lua, tmp_path, server_address, samaudio_program):
    src = write_wav(tmp_path / "take.wav", 1.0, 48000, 1)
    report = run_reaper(
        lua, tmp_path, tracks=[{"name": "Drums", "items": [item(src, 0.0, 1.0)]}],
        dialogs=[answers("snare drum", server_address, "not-the-token", "n", samaudio_program)],
    )
    assert_clean(report)
    assert_project_untouched(report, ["Drums"])
    (shown,) = report["messages"]
    assert "samaudio separate failed (exit 3)" in shown["text"]
    assert "UNAUTHENTICATED" in shown["text"] and "token" in shown["text"]
    assert "%|" not in shown["text"]  # progress-bar lines are not part of the message


def test_reaper_explains_how_to_set_the_program_when_it_cannot_be_run(lua, tmp_path):
    src = write_wav(tmp_path / "take.wav", 1.0, 48000, 1)
    missing = tmp_path / "no such folder" / "samaudio"
    report = run_reaper(
        lua, tmp_path, tracks=[{"name": "Drums", "items": [item(src, 0.0, 1.0)]}],
        dialogs=[answers("snare drum", "127.0.0.1:1", "", "n", missing)],
    )
    assert_clean(report)
    assert_project_untouched(report, ["Drums"])
    (shown,) = report["messages"]
    assert "exit 127" in shown["text"]
    assert f"The program '{missing}' could not be run" in shown["text"]
    assert "full path" in shown["text"]


# ------------------------------------------------------------------------------------------------------------
# Bookkeeping of the script alone: an instant stand-in program writes the stems


@pytest.fixture
def instant_program(tmp_path):
    """A stand-in for `samaudio` that copies a prepared wav to both stem names at once (no server, no model)."""
    stem = write_wav(tmp_path / "prepared.wav", 0.5, 48000, 1)
    program = tmp_path / "instant" / "samaudio"
    program.parent.mkdir()
    program.write_text(
        "#!/bin/sh\n"
        'file=$2\nwhile [ $# -gt 0 ]; do [ "$1" = --out-dir ] && out=$2; shift; done\n'
        'name=$(basename "$file"); name=${name%.*}\n'
        f'cp \'{stem}\' "$out/$name.target.wav" && cp \'{stem}\' "$out/$name.residual.wav"\n'
    )
    program.chmod(0o755)
    return program


@pytest.fixture
def several_stems_program(tmp_path):
    """A stand-in for `samaudio` that writes one prepared wav per --text and a residual, printing their paths as
    the real one does (the sounds in order, then the residual), and records its arguments in `args.txt`."""
    stem = write_wav(tmp_path / "prepared.wav", 0.5, 48000, 1)
    program = tmp_path / "several" / "samaudio"
    program.parent.mkdir()
    program.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$@\" > '{tmp_path / 'args.txt'}'\n"
        'file=$2; n=0\n'
        'while [ $# -gt 0 ]; do [ "$1" = --out-dir ] && out=$2; [ "$1" = --text ] && n=$((n + 1)); shift; done\n'
        'name=$(basename "$file"); name=${name%.*}\n'
        'i=1; while [ $i -le $n ]; do\n'
        f'  cp \'{stem}\' "$out/$name.stem$i.wav" && echo "$out/$name.stem$i.wav"; i=$((i + 1))\n'
        'done\n'
        f'cp \'{stem}\' "$out/$name.residual.wav" && echo "$out/$name.residual.wav"\n'
    )
    program.chmod(0o755)
    return program


def test_reaper_puts_several_sounds_in_a_folder_track_below_the_source(lua, tmp_path, several_stems_program):
    src = write_wav(tmp_path / "take.wav", 1.0, 48000, 1)
    report = run_reaper(
        lua, tmp_path, tracks=[{"name": "Band", "items": [item(src, 2.0, 1.0)]}, {"name": "Keys"}],
        dialogs=[answers(" vocals, drums;bass ;", "127.0.0.1:1", "", "n", several_stems_program, null_sum="y")],
    )

    assert_clean(report)
    assert report["messages"] == []
    layout = [(t["name"], t["folder_depth"]) for t in report["tracks"]]
    assert layout == [
        ("Band", 0), ("samaudio: vocals, drums, bass", 1), ("vocals", 0), ("drums", 0), ("bass", 0),
        ("residual", -1), ("Keys", 0),
    ]
    for track in report["tracks"][2:6]:
        (placed,) = track["items"]
        assert placed["position"] == pytest.approx(2.0) and placed["length"] == pytest.approx(1.0)
        path = Path(placed["takes"][0]["file"])
        assert path.parent == tmp_path / "media" and path.name == f"take - {track['name']}.wav" and path.exists()
    assert report["undo"] == [{"kind": "begin"}, {"kind": "end", "desc": 'samaudio: separate "vocals, drums, bass"',
                                                  "flags": -1}]
    assert report["changes_outside_undo"] == []
    args = (tmp_path / "args.txt").read_text().split("\n")
    assert [args[i + 1] for i, a in enumerate(args) if a == "--text"] == ["vocals", "drums", "bass"]
    assert "--null-sum" in args


def test_reaper_a_second_separation_keeps_the_first_one_s_files(lua, tmp_path, instant_program):
    src = write_wav(tmp_path / "take.wav", 1.0, 48000, 1)
    typed = answers("snare drum", "127.0.0.1:1", "", "n", instant_program)
    report = run_reaper(
        lua, tmp_path, runs=2, tracks=[{"name": "Drums", "items": [item(src, 0.0, 1.0)]}], dialogs=[typed, typed]
    )
    assert_clean(report)
    files = [t["items"][0]["takes"][0]["file"] for t in report["tracks"][1:]]
    # The newest pair is inserted right below the source, above the first pair.
    assert [Path(f).name for f in files] == [
        "take - snare drum - target (2).wav", "take - snare drum - residual (2).wav",
        "take - snare drum - target.wav", "take - snare drum - residual.wav",
    ]
    assert all(Path(f).exists() for f in files)
    assert [u["kind"] for u in report["undo"]] == ["begin", "end", "begin", "end"]


def test_reaper_separates_only_the_part_of_the_time_selection_inside_the_item(lua, tmp_path, instant_program):
    src = write_wav(tmp_path / "take.wav", 2.0, 48000, 1)
    report = run_reaper(
        lua, tmp_path, tracks=[{"name": "Drums", "items": [item(src, 4.0, 1.0, startoffs=0.5)]}],
        time_selection=[4.6, 7.0], dialogs=[answers("snare drum", "127.0.0.1:1", "", "n", instant_program)],
    )
    assert_clean(report)
    for track in stems_of(report):
        (placed,) = track["items"]
        assert (placed["position"], placed["length"]) == pytest.approx((4.6, 0.4), abs=1e-9)


# ------------------------------------------------------------------------------------------------------------
# Refusals: each says what to fix, starts nothing and changes nothing

REFUSALS = {
    "no item selected": (
        lambda src: [{"name": "Drums", "items": [{**item(src, 0.0, 1.0), "selected": False}]}], None,
        "No item selected",
    ),
    "two items selected": (
        lambda src: [{"name": "Drums", "items": [item(src, 0.0, 0.5), item(src, 0.5, 0.5)]}], None,
        "2 items are selected",
    ),
    "a MIDI take": (
        lambda src: [{"name": "Keys", "items": [item(src, 0.0, 1.0, source_type="MIDI")]}], None,
        "is a MIDI item",
    ),
    "a take at playrate 1.5": (
        lambda src: [{"name": "Drums", "items": [item(src, 0.0, 1.0, playrate=1.5)]}], None,
        "plays at rate 1.5, not 1.0",
    ),
    "a time selection outside the item": (
        lambda src: [{"name": "Drums", "items": [item(src, 2.0, 1.0)]}], [0.5, 1.5],
        "The time selection (0.500 to 1.500 s) is outside the selected item (2.000 to 3.000 s)",
    ),
    "a reversed or section take": (
        lambda src: [{"name": "Drums", "items": [item(src, 0.0, 1.0, source_type="SECTION")]}], None,
        "Glue the item",
    ),
    "an item past the end of its file": (
        lambda src: [{"name": "Drums", "items": [item(src, 0.0, 1.5, startoffs=0.25)]}], None,
        "The item plays 0.250 to 1.750 s of its file, which is 1.000 s long",
    ),
    "an empty item": (
        lambda src: [{"name": "Drums", "items": [{"position": 0.0, "length": 1.0, "selected": True}]}], None,
        "has no take",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_reaper_refuses_before_asking_anything(lua, tmp_path, case):
    make_tracks, time_selection, says = REFUSALS[case]
    src = write_wav(tmp_path / "take.wav", 1.0, 48000, 1)
    tracks = make_tracks(src)
    report = run_reaper(lua, tmp_path, tracks=tracks, time_selection=time_selection)
    assert_clean(report)
    (shown,) = report["messages"]
    assert says in shown["text"], shown["text"]
    assert report["dialogs"] == [] and report["exec"] == []
    assert_project_untouched(report, [t["name"] for t in tracks])


def test_reaper_refuses_span_mode_without_a_time_selection(lua, tmp_path):
    src = write_wav(tmp_path / "take.wav", 1.0, 48000, 1)
    report = run_reaper(
        lua, tmp_path, tracks=[{"name": "Drums", "items": [item(src, 0.0, 1.0)]}],
        dialogs=[answers("snare drum", "127.0.0.1:1", span="y")],
    )
    assert_clean(report)
    (shown,) = report["messages"]
    assert "Span mode uses the time selection as the prompt" in shown["text"]
    assert report["exec"] == []
    assert_project_untouched(report, ["Drums"])


def test_reaper_refuses_an_empty_description(lua, tmp_path):
    src = write_wav(tmp_path / "take.wav", 1.0, 48000, 1)
    report = run_reaper(
        lua, tmp_path, tracks=[{"name": "Drums", "items": [item(src, 0.0, 1.0)]}],
        dialogs=[answers("   ", "127.0.0.1:1")],
    )
    assert_clean(report)
    (shown,) = report["messages"]
    assert "Type what to extract" in shown["text"]
    assert report["exec"] == []
    assert_project_untouched(report, ["Drums"])


def test_reaper_refuses_an_unknown_quality(lua, tmp_path):
    src = write_wav(tmp_path / "take.wav", 1.0, 48000, 1)
    report = run_reaper(
        lua, tmp_path, tracks=[{"name": "Drums", "items": [item(src, 0.0, 1.0)]}],
        dialogs=[answers("snare drum", "127.0.0.1:1", quality="ultra")],
    )
    (shown,) = report["messages"]
    assert "Quality is fast or best" in shown["text"]
    assert report["exec"] == []


def test_reaper_best_quality_asks_for_candidates_and_predicted_spans(lua):
    job = "{file = 'a.wav', region_start = 1, region_length = 2}"
    calls = [
        f"table.concat(M.cli_args({job}, {{description = 'x', server = 's:1', quality = '{q}'}}, 'out'), ' ')"
        for q in ("fast", "best")
    ]
    fast, best = lua_helpers(lua, calls)
    assert "--candidates" not in fast and "--predict-spans" not in fast
    assert best == fast + " --candidates 4 --predict-spans"


def test_reaper_does_nothing_when_the_dialog_is_cancelled(lua, tmp_path):
    src = write_wav(tmp_path / "take.wav", 1.0, 48000, 1)
    report = run_reaper(lua, tmp_path, tracks=[{"name": "Drums", "items": [item(src, 0.0, 1.0)]}], dialogs=["cancel"])
    assert_clean(report)
    assert report["messages"] == [] and report["exec"] == []
    assert not any(k.startswith("samaudio/") for k in report["extstate"])
    assert_project_untouched(report, ["Drums"])


def test_reaper_remembers_the_dialog_s_answers_for_the_next_run(lua, tmp_path):
    src = write_wav(tmp_path / "take.wav", 1.0, 48000, 1)
    typed = answers("snare drum, hi-hat", "gpu-box:50051", "s3cret", "y", "/opt/samaudio/bin/samaudio", "best", "y")
    # First run: typed answers, then refused (span mode without a time selection); second run: dialog cancelled.
    report = run_reaper(
        lua, tmp_path, runs=2, tracks=[{"name": "Drums", "items": [item(src, 0.0, 1.0)]}], dialogs=[typed, "cancel"]
    )
    first, second = report["dialogs"]
    assert first["shown"] == ["", "127.0.0.1:50051", "", "n", "n", "samaudio", "fast"]  # the defaults
    assert second["shown"] == typed  # the list of sounds comes back as typed: the dialog separates with newlines
    for key, value in zip(("description", "server", "token", "span_mode", "null_sum", "program", "quality"), typed):
        assert report["extstate"][f"samaudio/{key}"] == {"value": value, "persist": True}


# ------------------------------------------------------------------------------------------------------------
# Cancelling: the process is killed, nothing is inserted, nothing is left behind


@pytest.fixture
def never_finishing_program(tmp_path):
    """A stand-in for `samaudio` that writes its pid and its parent's (the job wrapper) to `started`, then waits."""
    started = tmp_path / "started"
    program = tmp_path / "stand-in" / "samaudio"
    program.parent.mkdir()
    program.write_text(
        "#!/bin/sh\n"
        f"echo $$ $PPID > '{started}.tmp' && mv '{started}.tmp' '{started}'\n"
        "exec sleep 300\n"
    )
    program.chmod(0o755)
    yield program, started
    if started.exists():  # never leave the stand-in running, whatever the test did
        try:
            os.kill(pids_of(started)[0], signal.SIGKILL)
        except ProcessLookupError:
            pass


def pids_of(started: Path) -> tuple[int, int]:
    """(the stand-in's pid, its wrapper's pid) as the stand-in wrote them."""
    pid, parent = started.read_text().split()
    return int(pid), int(parent)


def assert_not_running(pid: int, timeout: float = 10.0) -> None:
    """The process has exited (a zombie its parent has yet to reap counts): waits on a pidfd, no sleeping."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    assert ready, f"process {pid} still runs {timeout} s after the script stopped it"


@pytest.mark.parametrize("action", ["escape", "click_cancel", "close"])
def test_reaper_cancel_kills_the_process_and_inserts_nothing(lua, tmp_path, never_finishing_program, action):
    program, started = never_finishing_program
    src = write_wav(tmp_path / "take.wav", 1.0, 48000, 1)
    report = run_reaper(
        lua, tmp_path, tracks=[{"name": "Drums", "items": [item(src, 0.0, 1.0)]}],
        dialogs=[answers("snare drum", "127.0.0.1:1", "", "n", program)],
        events=[{"when_file": started, "action": action}],
    )
    assert_clean(report)
    assert report["messages"] == []
    assert_project_untouched(report, ["Drums"])
    assert_not_running(pids_of(started)[0])


def test_reaper_running_the_action_again_offers_to_cancel_the_running_separation(
    lua, tmp_path, never_finishing_program
):
    program, started = never_finishing_program
    src = write_wav(tmp_path / "take.wav", 1.0, 48000, 1)
    report = run_reaper(
        lua, tmp_path, tracks=[{"name": "Drums", "items": [item(src, 0.0, 1.0)]}],
        dialogs=[answers("snare drum", "127.0.0.1:1", "", "n", program)], msgbox_answers=[6],
        events=[{"when_file": started, "action": "rerun"}],
    )
    assert_clean(report)
    (asked,) = report["messages"]
    assert asked["text"].startswith("A separation is running.") and asked["type"] == 4  # Yes/No
    assert len(report["dialogs"]) == 1  # the second run asked nothing else
    assert_project_untouched(report, ["Drums"])
    assert_not_running(pids_of(started)[0])


def test_reaper_terminating_the_script_kills_the_process(lua, tmp_path, never_finishing_program):
    program, started = never_finishing_program
    src = write_wav(tmp_path / "take.wav", 1.0, 48000, 1)
    report = run_reaper(
        lua, tmp_path, tracks=[{"name": "Drums", "items": [item(src, 0.0, 1.0)]}],
        dialogs=[answers("snare drum", "127.0.0.1:1", "", "n", program)],
        events=[{"when_file": started, "action": "terminate"}],
    )
    assert report["errors"] == []
    assert report["messages"] == []
    assert report["gfx"]["open"] is False
    assert "samaudio/running_job" not in report["extstate"]
    assert_project_untouched(report, ["Drums"])
    program_pid, wrapper_pid = pids_of(started)
    assert_not_running(program_pid)
    assert_not_running(wrapper_pid)  # the wrapper deletes the job folder on its way out when the script is gone
    assert list((tmp_path / "jobs").iterdir()) == []


# ------------------------------------------------------------------------------------------------------------
# Helpers of the script, loaded as a library


def lua_helpers(lua: str, calls: list[str]) -> list[str]:
    """Evaluate Lua expressions over the script's module table `M`; returns their string results."""
    program = f"SAMAUDIO_LIBRARY = true\nlocal M = dofile({lua_string(str(SCRIPT))})\n"
    program += "".join(f"io.write(tostring({c}), '\\0')\n" for c in calls)
    done = subprocess.run([lua, "-"], input=program, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\0")[:-1]


AWKWARD_ARGS = ["plain", "", "two words", 'say "hi"', "C:\\Program Files\\x\\", "C:\\dir\\", 'a\\"b', "tab\there",
                "it's", "ünïcode path/ñ.wav", "trailing\\\\"]


def test_reaper_windows_quoting_matches_the_c_runtime_rules(lua):
    got = lua_helpers(lua, [f"M.win_quote({lua_string(a)})" for a in AWKWARD_ARGS])
    assert got == [subprocess.list2cmdline([a]) for a in AWKWARD_ARGS]


def test_reaper_shell_quoting_round_trips_through_sh(lua):
    quoted = lua_helpers(lua, [f"M.sh_quote({lua_string(a)})" for a in AWKWARD_ARGS])
    for original, q in zip(AWKWARD_ARGS, quoted):
        echoed = subprocess.run(["/bin/sh", "-c", f"printf %s {q}"], capture_output=True, text=True).stdout
        assert echoed == original


def test_reaper_reads_the_last_percentage_of_the_progress_bar(lua):
    bar = "\r".join(
        ["take.wav:   0%|          | 0.0/1.2 s", "take.wav:  48%|####▊     | 0.6/1.2 s", "take.wav: 100%|##########| 1.2/1.2 s"]
    )
    calls = [f"M.parse_progress({lua_string(bar)})", "M.parse_progress('')", "M.parse_progress('no bar')"]
    got = lua_helpers(lua, calls)
    assert got == ["100", "nil", "nil"]


def test_reaper_error_text_drops_progress_lines(lua):
    bars = "take.wav:  10%|#   | 0.1/1.0 s\rtake.wav:  20%|##  | 0.2/1.0 s\n"
    stderr = bars + "samaudio separate: error: UNAVAILABLE: down\n"
    (got,) = lua_helpers(lua, [f"M.error_text({lua_string(stderr)})"])
    assert got == "samaudio separate: error: UNAVAILABLE: down"


def test_reaper_splits_the_sounds_at_commas_and_semicolons(lua):
    got = lua_helpers(lua, ["table.concat(M.descriptions(' vocals, drums;bass ,, ; '), '|')",
                            "#M.descriptions(' ;, ')", "table.concat(M.descriptions('snare drum'), '|')"])
    assert got == ["vocals|drums|bass", "0", "snare drum"]


def test_reaper_seconds_are_written_without_exponents(lua):
    got = lua_helpers(lua, ["M.secs(1.0)", "M.secs(0.5)", "M.secs(1e-7)", "M.secs(12.3456789)", "M.secs(1.1)"])
    assert got == ["1", "0.5", "0", "12.345679", "1.1"]


# ------------------------------------------------------------------------------------------------------------
# ReaPack packaging


def package_tags(text: str) -> dict[str, str]:
    """The ReaPack header: `-- @tag value` lines and their indented continuation lines."""
    tags, current = {}, None
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        m = re.match(r"--\s*@(\w+)\s*(.*)$", line)
        if m:
            current = m.group(1)
            tags[current] = m.group(2)
        elif current and re.match(r"--\s{2,}\S", line):
            tags[current] += "\n" + line[2:].strip()
    return tags


def test_reaper_script_has_a_reapack_header_and_the_index_lists_it():
    tags = package_tags(SCRIPT.read_text())
    assert {"description", "version", "author", "about", "provides", "changelog"} <= tags.keys()
    assert "[main] ." in tags["provides"]
    index = ET.parse(REAPER_DIR / "index.xml").getroot()
    assert index.tag == "index" and index.get("version") == "1"
    packages = index.findall("./category/reapack")
    (package,) = [p for p in packages if p.get("name") == SCRIPT.name]
    assert package.get("type") == "script" and package.get("desc") == tags["description"]
    versions = [v.get("name") for v in package.findall("version")]
    assert versions[-1] == tags["version"].strip()
    source = package.find(f"version[@name='{versions[-1]}']/source")
    assert source.get("main") == "main" and source.text.strip().endswith("/clients/reaper/" + SCRIPT.name)


def test_reaper_script_lists_exactly_the_api_it_uses():
    text = SCRIPT.read_text()
    api = re.compile(r"\b(?:reaper|gfx)\.[A-Za-z_]\w*")
    list_lines = [line for line in text.splitlines() if re.match(r"--\s+(?:reaper|gfx)\.", line)]
    listed = {name for line in list_lines for name in api.findall(line)}
    used = set(api.findall("\n".join(line.split("--")[0] for line in text.splitlines())))
    assert listed == used, f"list but not used: {sorted(listed - used)}; used but not listed: {sorted(used - listed)}"
