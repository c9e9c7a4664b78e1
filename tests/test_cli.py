"""The `samaudio` command line, run from the thin install (no torch) against a real server on loopback.

The thin install is a venv of its own: CI makes it and names its python in SAMAUDIO_THIN_PYTHON; without it
the session makes one (`pip install <repo>`, no extras). Commands that need the model stack (`--local`,
`demo`) run from this interpreter instead.
"""

from __future__ import annotations

import json
import logging
import re
import os
import shutil
import statistics
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import decoded_frames, write_mp3_without_length_header
from samaudio_client import Client
from server_fixtures import (  # noqa: F401 - fixtures are used by name
    CHUNK_SECONDS,
    OVERLAP_SECONDS,
    SOLVER_STEPS,
    golden_server,
    make_audio,
    server_process,
    start_server,
    wait_until,
)

FAST = ["--chunk-seconds", str(CHUNK_SECONDS), "--overlap-seconds", str(OVERLAP_SECONDS), "--steps", str(SOLVER_STEPS)]
OPTIONS = {"chunk_seconds": CHUNK_SECONDS, "overlap_seconds": OVERLAP_SECONDS, "solver_steps": SOLVER_STEPS}


def run(python: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("SAMAUDIO_TOKEN", "SAMAUDIO_SERVER")}
    # The command shares the cores with the server in this process; torch threads of both waiting on each other
    # at every op would slow a tiny model down by orders of magnitude.
    environment.setdefault("OMP_NUM_THREADS", "1")
    environment.update(env or {})
    return subprocess.run(
        [python, "-m", "samaudio_client.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def server(golden_server) -> str:
    return f"127.0.0.1:{golden_server[1]}"


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(path: Path, seconds: float, rate: int, channels: int, seed: int = 0) -> np.ndarray:
    audio = make_audio(seconds, rate, channels, seed)
    sf.write(path, audio, rate, subtype="FLOAT")
    return audio


def test_the_thin_install_has_no_torch(thin_python):
    no_torch = subprocess.run([thin_python, "-c", "import torch"], capture_output=True, check=False)
    everything = "import sys, samaudio_client.cli as cli; cli.build_parser(); assert 'torch' not in sys.modules"
    client = subprocess.run([thin_python, "-c", everything], check=False)

    assert no_torch.returncode != 0
    assert client.returncode == 0


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (48000, 1)], ids=["stereo-44k1", "mono-48k"])
def test_separate_writes_both_stems_at_the_inputs_rate_channels_and_length(
    thin_python, server, tmp_path, rate, channels
):
    audio = write(tmp_path / "take.wav", 1.13, rate, channels)

    result = run(thin_python, "separate", str(tmp_path / "take.wav"), "--text", "a chirp", "--server", server, *FAST)

    assert result.returncode == 0, result.stderr
    target, residual = tmp_path / "take.target.wav", tmp_path / "take.residual.wav"
    assert result.stdout.split() == [str(target), str(residual)]
    for path in (target, residual):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.frames) == (rate, channels, len(audio))


def test_an_mp3_whose_header_misstates_its_length_separates_to_its_decoded_length(thin_python, server, tmp_path):
    write_mp3_without_length_header(tmp_path / "take.mp3", 1.3)
    stated, decoded = sf.info(tmp_path / "take.mp3").frames, decoded_frames(tmp_path / "take.mp3")

    result = run(thin_python, "separate", str(tmp_path / "take.mp3"), "--text", "a tone", "--server", server, *FAST)

    assert result.returncode == 0, result.stderr
    assert f"its header states {stated} frames, it decodes to {decoded}" in result.stderr
    for stem in ("target", "residual"):
        info = sf.info(tmp_path / f"take.{stem}.wav")
        assert (info.samplerate, info.channels, info.frames) == (44100, 2, decoded)


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (48000, 1)], ids=["stereo-44k1", "mono-48k"])
def test_start_and_duration_write_the_regions_exact_length(thin_python, server, tmp_path, rate, channels):
    write(tmp_path / "take.wav", 1.9, rate, channels)

    result = run(
        thin_python,
        "separate",
        str(tmp_path / "take.wav"),
        "--text",
        "a chirp",
        "--start",
        "0.731",
        "--duration",
        "0.934",
        "--server",
        server,
        "--out-dir",
        str(tmp_path / "out"),
        *FAST,
    )

    assert result.returncode == 0, result.stderr
    for stem in ("target", "residual"):
        info = sf.info(tmp_path / "out" / f"take.{stem}.wav")
        assert (info.samplerate, info.channels, info.frames) == (rate, channels, round(0.934 * rate))


def test_the_written_stems_are_the_clients_stems_with_spans_on_the_files_timeline(thin_python, server, tmp_path):
    write(tmp_path / "take.wav", 1.6, 44100, 2, seed=3)
    spans = ["--span", "+0.9:1.3", "--span", "-0.5:0.7"]  # the second as the issue writes it

    result = run(
        thin_python,
        "separate",
        str(tmp_path / "take.wav"),
        "--text",
        "a chirp",
        *spans,
        "--start",
        "0.4",
        "--duration",
        "1.1",
        "--server",
        server,
        *FAST,
    )

    assert result.returncode == 0, result.stderr
    with Client(server) as client:
        stems = client.separate_file(
            tmp_path / "take.wav", "a chirp", ["+0.9:1.3", "-0.5:0.7"], start=0.4, duration=1.1, **OPTIONS
        )
        unprompted = client.separate_file(tmp_path / "take.wav", "a chirp", start=0.4, duration=1.1, **OPTIONS)
    target, _ = sf.read(tmp_path / "take.target.wav", dtype="float32")
    residual, _ = sf.read(tmp_path / "take.residual.wav", dtype="float32")
    np.testing.assert_array_equal(target, stems.target)  # 32-bit float WAV keeps the stems exactly
    np.testing.assert_array_equal(residual, stems.residual)
    assert not np.array_equal(target, unprompted.target)  # the spans reached the server


def test_flac_output_has_the_inputs_rate_channels_and_length(thin_python, server, tmp_path):
    audio = write(tmp_path / "take.wav", 0.9, 44100, 2)

    args = ["separate", str(tmp_path / "take.wav"), "--text", "x", "--format", "flac", "--quiet", *FAST]
    result = run(thin_python, *args, "--server", server)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --quiet: no bar, no summary
    info = sf.info(tmp_path / "take.target.flac")
    assert (info.format, info.samplerate, info.channels, info.frames) == ("FLAC", 44100, 2, len(audio))


def test_the_progress_bar_and_summary_go_to_stderr(thin_python, server, tmp_path):
    write(tmp_path / "take.wav", 0.5, 48000, 1)

    result = run(thin_python, "separate", str(tmp_path / "take.wav"), "--text", "x", "--server", server, *FAST)

    assert result.returncode == 0, result.stderr
    assert "take.wav: 100%" in result.stderr and "0.500 s, 1 ch, 48000 Hz separated" in result.stderr
    # one window, not "1 windows"; of the file's own length (13 frames of 40 ms), not the 1 s chunk
    assert "model golden, 1 window, chunk 0.52 s" in result.stderr


def test_info_prints_health_models_and_limits(thin_python, server):
    text = run(thin_python, "info", "--server", server)
    as_json = run(thin_python, "info", "--server", server, "--json")

    assert text.returncode == as_json.returncode == 0, text.stderr + as_json.stderr
    assert "health    SERVING" in text.stdout and "model     golden (default): 48000 Hz" in text.stdout
    assert "limit     max_stream_seconds 3600 s" in text.stdout
    assert "limit     max_request_bytes 8388608 bytes (8 MiB)" in text.stdout  # not 8.38861e+06
    info = json.loads(as_json.stdout)
    assert info["health"] == "SERVING" and info["models"][0]["name"] == "golden"


def test_a_wrong_token_exits_3_with_the_servers_message(thin_python, golden_model, golden_processor, tmp_path):
    write(tmp_path / "take.wav", 0.5, 48000, 1)
    srv, port = start_server(golden_model, golden_processor, token="s3cret")
    try:
        args = ["separate", str(tmp_path / "take.wav"), "--text", "x", "--server", f"127.0.0.1:{port}", *FAST]
        wrong = run(thin_python, *args, "--token", "nope")
        from_env = run(thin_python, *args, env={"SAMAUDIO_TOKEN": "s3cret"})
    finally:
        srv.stop(0)

    assert wrong.returncode == 3
    assert "UNAUTHENTICATED" in wrong.stderr and "wrong token" in wrong.stderr
    assert "--token or the SAMAUDIO_TOKEN" in wrong.stderr  # the CLI's own hint, added to the server's words
    assert from_env.returncode == 0, from_env.stderr


def test_a_file_over_the_servers_limit_exits_3_before_sending_any_audio_and_leaves_no_partial_files(
    thin_python, golden_model, golden_processor, tmp_path, caplog
):
    from samaudio_server.servicer import Limits

    write(tmp_path / "take.wav", 2.0, 48000, 1)
    srv, port = start_server(golden_model, golden_processor, limits=Limits(max_stream_seconds=1.0))
    caplog.set_level(logging.INFO, logger="samaudio_server")
    try:
        args = ["separate", str(tmp_path / "take.wav"), "--text", "x", "--server", f"127.0.0.1:{port}", *FAST]
        result = run(thin_python, *args)
    finally:
        srv.stop(0)

    assert result.returncode == 3
    assert "RESOURCE_EXHAUSTED" in result.stderr and "more than this server's limit of 1 s" in result.stderr
    assert "stream from" not in caplog.text  # refused from GetInfo's limits: no stream was opened
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.wav"]


def test_an_overlap_not_shorter_than_the_servers_default_window_exits_2_before_any_upload(
    thin_python, server, tmp_path
):
    write(tmp_path / "take.wav", 0.3, 48000, 1)

    args = ["separate", str(tmp_path / "take.wav"), "--text", "x", "--server", server, "--overlap-seconds", "1"]
    result = run(thin_python, *args)

    assert result.returncode == 2
    assert f"the overlap 1 s must be less than the window {CHUNK_SECONDS:g} s" in result.stderr
    assert not (tmp_path / "take.target.wav").exists()


@pytest.mark.parametrize(
    ("signum", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_mid_stream_removes_the_partial_stems_and_leaves_the_bar_where_it_stopped(
    thin_python, server, tmp_path, signum, code, word
):
    write(tmp_path / "take.wav", 30.0, 48000, 1)
    args = ["separate", str(tmp_path / "take.wav"), "--text", "x", "--server", server, *FAST]
    environment = {k: v for k, v in os.environ.items() if k not in ("SAMAUDIO_TOKEN", "SAMAUDIO_SERVER")}
    command = [thin_python, "-m", "samaudio_client.cli", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    part = tmp_path / "take.target.wav.part"
    # stem blocks are coming in: mid-stream (the child's file is all there is to watch); a child that ended stops it
    mid_stream = wait_until(lambda: proc.poll() is not None or (part.exists() and part.stat().st_size > 48_000))
    assert mid_stream and proc.poll() is None, proc.communicate()

    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == code, stderr
    assert f"samaudio separate: {word}" in stderr
    assert "100%" not in stderr  # the bar stays where the stream stopped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.wav"]


def test_a_stream_that_fails_midway_leaves_the_bar_where_it_stopped(thin_python, server, tmp_path):
    audio = make_audio(3.0, 48000, 1, seed=2)
    audio[2 * 48000] = np.nan  # the server refuses non-finite samples when it reads them, after two seconds
    sf.write(tmp_path / "take.wav", audio, 48000, subtype="FLOAT")

    result = run(thin_python, "separate", str(tmp_path / "take.wav"), "--text", "x", "--server", server, *FAST)

    assert result.returncode == 3 and "INVALID_ARGUMENT" in result.stderr, result.stderr
    assert "take.wav:" in result.stderr and "100%" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.wav"]


def test_an_unknown_model_points_at_samaudio_info(thin_python, server, tmp_path):
    write(tmp_path / "take.wav", 0.3, 48000, 1)

    result = run(thin_python, "separate", str(tmp_path / "take.wav"), "--text", "x", "--server", server, "--model", "nope")

    assert result.returncode == 3 and "INVALID_ARGUMENT" in result.stderr
    assert f"(samaudio info --server {server} lists the models it serves)" in result.stderr


def test_a_server_that_is_down_exits_3_saying_so(thin_python, closed_port, tmp_path):
    write(tmp_path / "take.wav", 0.5, 48000, 1)

    args = ["separate", str(tmp_path / "take.wav"), "--text", "x", "--server", f"127.0.0.1:{closed_port}"]
    result = run(thin_python, *args)

    assert result.returncode == 3
    assert "UNAVAILABLE" in result.stderr and f"is the server running at 127.0.0.1:{closed_port}?" in result.stderr


def test_a_span_that_cannot_be_read_exits_2_naming_the_expected_form(thin_python, tmp_path):
    result = run(thin_python, "separate", str(tmp_path / "take.wav"), "--text", "x", "--span", "1.2-3.4")

    assert result.returncode == 2
    assert "cannot read span '1.2-3.4'" in result.stderr and "e.g. +1.2:3.4 or -5:6" in result.stderr


def test_a_span_outside_the_region_exits_2(thin_python, tmp_path):
    write(tmp_path / "take.wav", 1.0, 48000, 1)

    result = run(thin_python, "separate", str(tmp_path / "take.wav"), "--text", "x", "--span", "+0.8:1.5")

    assert result.returncode == 2
    assert "span +0.8:1.5 lies outside the separated region 0..1 s" in result.stderr


def test_a_region_past_the_end_exits_2_with_the_longest_duration_that_fits(thin_python, tmp_path):
    write(tmp_path / "take.wav", 1.0, 48000, 1)

    args = ["separate", str(tmp_path / "take.wav"), "--text", "x", "--start", "0.5", "--duration", "0.8"]
    result = run(thin_python, *args)

    assert result.returncode == 2
    assert "use --duration 0.500 or less" in result.stderr


def test_a_missing_file_exits_2(thin_python, tmp_path):
    result = run(thin_python, "separate", str(tmp_path / "nope.wav"), "--text", "x")

    assert result.returncode == 2
    assert "nope.wav: no such file" in result.stderr


def test_a_folder_as_input_exits_2_saying_it_is_a_folder(thin_python, tmp_path):
    result = run(thin_python, "separate", str(tmp_path), "--text", "x")

    assert result.returncode == 2
    assert f"{tmp_path} is a folder: give the audio files in it" in result.stderr


def test_two_inputs_that_would_write_the_same_stems_exit_2_before_any_work(thin_python, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write(tmp_path / folder / "take.wav", 0.3, 48000, 1)
    out = tmp_path / "out"
    files = [str(tmp_path / "a" / "take.wav"), str(tmp_path / "b" / "take.wav")]

    same_name = run(thin_python, "separate", *files, "--text", "x", "--out-dir", str(out))
    twice = run(thin_python, "separate", files[0], files[0], "--text", "x")

    assert same_name.returncode == twice.returncode == 2
    assert f"{files[0]} and {files[1]} would both write {out / 'take.target.wav'}" in same_name.stderr
    assert "would both write" in twice.stderr
    assert not out.exists() and sorted(p.name for p in (tmp_path / "a").iterdir()) == ["take.wav"]


def test_an_overlap_not_shorter_than_the_window_exits_2_before_connecting(thin_python, closed_port, tmp_path):
    write(tmp_path / "take.wav", 0.3, 48000, 1)
    args = ["separate", str(tmp_path / "take.wav"), "--text", "x", "--server", f"127.0.0.1:{closed_port}"]

    result = run(thin_python, *args, "--chunk-seconds", "2", "--overlap-seconds", "2")

    assert result.returncode == 2
    assert "--overlap-seconds 2 must be less than --chunk-seconds 2" in result.stderr


def test_version_help_defaults_and_exit_codes(thin_python):
    from samaudio import __version__

    version = run(thin_python, "--version")
    top = " ".join(run(thin_python, "--help").stdout.split())
    separate = " ".join(run(thin_python, "separate", "--help").stdout.split())
    info = " ".join(run(thin_python, "info", "--help").stdout.split())

    assert version.stdout.strip() == f"samaudio {__version__}"
    assert "exit codes: 0 done; 2 usage" in top and "exit codes: 0 done; 2 usage" in separate
    assert "(default: the server's, 10 unless it sets another)" in separate
    assert "(default: the server's, 2 unless it sets another)" in separate
    assert "Describe a samaudio server" in info


def test_no_text_and_no_positive_span_exits_2(thin_python, tmp_path):
    write(tmp_path / "take.wav", 0.5, 48000, 1)

    result = run(thin_python, "separate", str(tmp_path / "take.wav"), "--span", "-0.1:0.2")

    assert result.returncode == 2
    assert 'say what to separate: --text "snare drum"' in result.stderr


def test_local_on_the_thin_install_says_to_install_the_server_extra(thin_python, golden_dir, tmp_path):
    write(tmp_path / "take.wav", 0.5, 48000, 1)

    args = ["separate", str(tmp_path / "take.wav"), "--text", "x", "--local", "--model", str(golden_dir)]
    result = run(thin_python, *args)

    assert result.returncode == 3
    assert 'pip install "samaudio[server]"' in result.stderr


def test_the_client_package_imports_the_server_package_only_for_the_in_process_demo():
    """The thin client talks to servers over gRPC; only `samaudio demo` starts one in its own process."""
    import ast

    import samaudio_client

    importers = set()
    for path in Path(samaudio_client.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        if any(name.split(".")[0] == "samaudio_server" for name in names):
            importers.add(path.name)
    assert importers == {"demo.py"}


def test_samaudio_server_on_the_thin_install_says_to_install_the_server_extra(thin_python):
    script = Path(thin_python).parent / ("samaudio-server.exe" if os.name == "nt" else "samaudio-server")

    result = subprocess.run([str(script), "--port", "0"], capture_output=True, text=True, check=False, timeout=120)

    assert result.returncode == 2
    assert 'pip install "samaudio[server]"' in result.stderr and "Traceback" not in result.stderr


def test_local_writes_the_same_stems_as_the_server(thin_python, server, golden_dir, tmp_path):
    write(tmp_path / "take.wav", 1.1, 44100, 2, seed=8)
    args = ["separate", str(tmp_path / "take.wav"), "--text", "a chirp", "--span", "+0.2:0.9", *FAST]

    remote = run(thin_python, *args, "--server", server, "--out-dir", str(tmp_path / "remote"))
    local = run(sys.executable, *args, "--local", "--model", str(golden_dir), "--out-dir", str(tmp_path / "local"))

    assert remote.returncode == 0, remote.stderr
    assert local.returncode == 0, local.stderr
    for stem in ("target", "residual"):
        a, _ = sf.read(tmp_path / "remote" / f"take.{stem}.wav", dtype="float32")
        b, _ = sf.read(tmp_path / "local" / f"take.{stem}.wav", dtype="float32")
        np.testing.assert_allclose(a, b, atol=1e-5)  # the server may batch windows differently


def test_models_lists_the_names_a_model_can_be_given_by_on_the_thin_install(thin_python):
    listing = run(thin_python, "models")
    as_json = run(thin_python, "models", "--json")

    assert listing.returncode == 0, listing.stderr
    assert any(line.split()[:2] == ["demo-tiny", "untrained"] for line in listing.stdout.splitlines())
    assert "samaudio-server --model NAME" in listing.stdout
    names = {m["name"]: m["trained"] for m in json.loads(as_json.stdout)}
    assert names["demo-tiny"] is False and "sam-audio-small" in names


def test_a_preset_name_serves_and_runs_local_with_the_same_untrained_model(thin_python, tmp_path):
    """`samaudio-server --model demo-tiny` and `separate --local --model demo-tiny` need no weights, and the
    same name builds the same model in both processes."""
    write(tmp_path / "take.wav", 0.7, 44100, 2, seed=3)
    args = ["separate", str(tmp_path / "take.wav"), "--text", "a chirp", "--model", "demo-tiny", *FAST]

    with server_process("--model", "demo-tiny", "--device", "cpu") as (_, port, log):
        info = run(thin_python, "info", "--server", f"127.0.0.1:{port}")
        remote = run(thin_python, *args, "--server", f"127.0.0.1:{port}", "--out-dir", str(tmp_path / "remote"))
    local = run(sys.executable, *args, "--local", "--out-dir", str(tmp_path / "local"))

    assert "model     demo-tiny (default)" in info.stdout, info.stdout
    assert "UNTRAINED" in "".join(log)
    assert remote.returncode == 0, remote.stderr
    assert local.returncode == 0, local.stderr
    for stem in ("target", "residual"):
        a, _ = sf.read(tmp_path / "remote" / f"take.{stem}.wav", dtype="float32")
        b, _ = sf.read(tmp_path / "local" / f"take.{stem}.wav", dtype="float32")
        assert a.shape == (round(0.7 * 44100), 2)
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_demo_separates_three_sounds_with_the_shipped_model_in_a_temporary_folder_and_scores_them(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "samaudio_client.cli", "demo", "--seconds", "4", "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "UNTRAINED" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []  # nothing left in the folder it was run from
    # "  <name>  <path>[  SI-SDR ... (the mixture's ...: <gain> dB)]"
    rows = [re.match(r"  (\S.*?)\s{2,}(\S+)(?:\s+SI-SDR .*: ([-+][\d.]+) dB\))?$", line) for line in result.stdout.splitlines()]
    paths = {m[1]: Path(m[2]) for m in rows if m}
    gains = [float(m[3]) for m in rows if m and m[3]]
    folder = paths["input"].parent
    try:
        assert folder.name.startswith("samaudio-demo-")
        assert set(paths) == {"input", "a bass line", "a kick drum", "a beeping tone", "residual"}
        for name, path in paths.items():
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.frames) == (48000, 1, 4 * 48000), name
        assert len(gains) == 3 and statistics.median(gains) > 0, result.stdout  # the stems are closer than the mix
        assert "trained samaudio-demo model" in result.stdout
        assert "samaudio-server --model samaudio-demo" in result.stdout
    finally:
        shutil.rmtree(folder)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 and its key (PEM files), made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    names = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    command = ["openssl", "req", "-x509", *ec_key, *names, "-days", "1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key


def test_tls_ca_trusts_a_server_with_a_self_signed_certificate(
    thin_python, golden_model, golden_processor, certificate, tmp_path
):
    cert, key = certificate
    audio = write(tmp_path / "take.wav", 0.6, 48000, 2)
    srv, port = start_server(golden_model, golden_processor, tls_cert=cert.read_bytes(), tls_key=key.read_bytes())
    try:
        args = ["separate", str(tmp_path / "take.wav"), "--text", "x", "--server", f"localhost:{port}", *FAST]
        trusted = run(thin_python, *args, "--tls-ca", str(cert))
        untrusted = run(thin_python, *args, "--tls")  # the system's roots do not know the certificate
    finally:
        srv.stop(0)

    assert trusted.returncode == 0, trusted.stderr
    assert sf.info(tmp_path / "take.target.wav").frames == len(audio)
    assert untrusted.returncode == 3 and "UNAVAILABLE" in untrusted.stderr
    assert "--tls-ca CERT.pem trusts a self-signed certificate" in untrusted.stderr


def test_stems_keep_the_inputs_subtype_and_subtype_chooses_another(thin_python, server, tmp_path):
    audio = make_audio(0.6, 48000, 1, seed=3) * 0.5
    sf.write(tmp_path / "a16.wav", audio, 48000, subtype="PCM_16")
    sf.write(tmp_path / "a24.wav", audio, 48000, subtype="PCM_24")
    sf.write(tmp_path / "afl.wav", audio, 48000, subtype="FLOAT")
    files = [str(tmp_path / f"{n}.wav") for n in ("a16", "a24", "afl")]

    kept = run(thin_python, "separate", *files, "--text", "x", "--server", server, *FAST)
    chosen = run(
        thin_python, "separate", files[0], "--text", "x", "--server", server, "--subtype", "pcm_24",
        "--out-dir", str(tmp_path / "out"), *FAST,
    )
    wrong = run(thin_python, "separate", files[0], "--text", "x", "--format", "flac", "--subtype", "FLOAT", *FAST)

    assert kept.returncode == 0 and chosen.returncode == 0, kept.stderr + chosen.stderr
    for name, subtype in (("a16", "PCM_16"), ("a24", "PCM_24"), ("afl", "FLOAT")):
        for stem in ("target", "residual"):
            assert sf.info(tmp_path / f"{name}.{stem}.wav").subtype == subtype
    assert sf.info(tmp_path / "out" / "a16.target.wav").subtype == "PCM_24"
    assert wrong.returncode == 2 and "--subtype" in wrong.stderr and "PCM_24" in wrong.stderr


def test_the_osc_bridge_and_the_demo_do_not_import_the_command_line():
    """Shared options live in samaudio_client.options: cli imports osc and demo, never the other way round."""
    import ast

    import samaudio_client

    folder = Path(samaudio_client.__file__).parent
    for name in ("osc.py", "demo.py", "options.py"):
        tree = ast.parse((folder / name).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {f"{node.module}.{a.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                     for a in node.names}
        imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        assert not {"samaudio_client.cli", "samaudio_client.osc"} & imported, name


@pytest.fixture(scope="module")
def localhost_only_certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate whose subjectAltName names localhost only (not 127.0.0.1)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls-localhost")
    cert, key = folder / "cert.pem", folder / "key.pem"
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    names = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"]
    command = ["openssl", "req", "-x509", *ec_key, *names, "-days", "1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key


def test_a_tls_mismatch_says_which_tls_option_to_change_without_retrying_or_grpc_log_lines(
    thin_python, server, golden_model, golden_processor, localhost_only_certificate, tmp_path
):
    cert, key = localhost_only_certificate
    write(tmp_path / "take.wav", 0.3, 48000, 1)
    args = ["separate", str(tmp_path / "take.wav"), "--text", "x", *FAST]
    srv, port = start_server(golden_model, golden_processor, tls_cert=cert.read_bytes(), tls_key=key.read_bytes())
    try:
        plaintext_to_tls = run(thin_python, *args, "--server", f"localhost:{port}")
        wrong_name = run(thin_python, *args, "--server", f"127.0.0.1:{port}", "--tls-ca", str(cert))
    finally:
        srv.stop(0)
    tls_to_plaintext = run(thin_python, *args, "--server", server, "--tls-ca", str(cert))

    for result in (plaintext_to_tls, wrong_name, tls_to_plaintext):
        assert result.returncode == 3 and "UNAVAILABLE" in result.stderr
        assert "tries" not in result.stderr and "is the server running" not in result.stderr  # no retries
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        assert all(line.startswith(("samaudio ", "take.wav")) for line in lines), result.stderr  # no gRPC core lines
    assert "it may serve TLS only" in plaintext_to_tls.stderr and "add --tls-ca CERT.pem" in plaintext_to_tls.stderr
    assert "certificate does not name the host 127.0.0.1" in wrong_name.stderr
    assert "give --server a name the certificate lists" in wrong_name.stderr
    assert "does not seem to serve TLS" in tls_to_plaintext.stderr and "leave out --tls" in tls_to_plaintext.stderr


def test_several_texts_write_one_file_per_sound_that_sum_back_to_the_input_with_null_sum(
    thin_python, server, tmp_path
):
    audio = (np.round(make_audio(1.2, 44100, 2, seed=5) * 2**23) / 2**23).astype(np.float32)
    sf.write(tmp_path / "take.wav", audio, 44100, subtype="PCM_24")

    result = run(
        thin_python, "separate", str(tmp_path / "take.wav"), "--text", "a chirp", "--text", "Low hum!",
        "--null-sum", "--server", server, *FAST,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    paths = [tmp_path / f"take.{name}.wav" for name in ("a-chirp", "low-hum", "residual")]
    assert result.stdout.split() == [str(p) for p in paths]  # the sounds in order, then the residual
    stems = [sf.read(p, dtype="float64")[0] for p in paths]
    assert all(sf.info(p).subtype == "PCM_24" for p in paths)
    assert np.array_equal(stems[0] + stems[1] + stems[2], audio.astype(np.float64))  # to the last bit


def test_the_progress_bar_moves_inside_a_single_window(thin_python, server, tmp_path):
    write(tmp_path / "take.wav", 0.5, 48000, 1)

    result = run(thin_python, "separate", str(tmp_path / "take.wav"), "--text", "x", "--server", server,
                 "--chunk-seconds", "10", "--steps", "4")

    assert result.returncode == 0, result.stderr
    shown = [int(p) for p in re.findall(r"(\d+)%\|", result.stderr)]
    assert len({p for p in shown if 0 < p < 100}) >= 3, shown  # 8 evaluations of the one window, told as they run
    assert shown == sorted(shown) and shown[-1] == 100
