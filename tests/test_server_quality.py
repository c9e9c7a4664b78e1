"""The quality path over a real server (issue 16): candidates, span prediction and the span gate in the config,
the parts GetInfo lists, FAILED_PRECONDITION for a part the server did not load, scores in the summary."""

from __future__ import annotations

import os
import subprocess

import grpc
import numpy as np
import pytest
import soundfile as sf
from server_fixtures import (
    CHUNK_SECONDS,
    OVERLAP_SECONDS,
    SOLVER_STEPS,
    channel,  # noqa: F401 (fixtures)
    config,
    golden_server,  # noqa: F401
    make_audio,
    pieces,
    reference,
    separate,
    server_process,
    start_server,
    status_of,
    stub,  # noqa: F401
)

from samaudio.v1 import separation_pb2 as pb
from samaudio.v1 import separation_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def quality_server(quality_model, golden_processor) -> str:
    """The golden model with its span predictor and ensemble text ranker, served on loopback: its address."""
    server, port = start_server(quality_model, golden_processor)
    yield f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture(scope="module")
def quality_stub(quality_server):
    with grpc.insecure_channel(quality_server) as ch:
        yield pb_grpc.SeparationServiceStub(ch)


def test_get_info_lists_the_loaded_parts(quality_stub, stub):
    info = quality_stub.GetInfo(pb.GetInfoRequest())
    model = info.models[0]
    assert (model.text_ranker, model.visual_ranker, model.span_predictor) == ("ensemble", "", "span_predictor")
    assert info.limits.max_candidates == 8
    plain = stub.GetInfo(pb.GetInfoRequest()).models[0]
    assert (plain.text_ranker, plain.visual_ranker, plain.span_predictor) == ("", "", "")


def test_candidates_through_the_server_equal_the_streaming_engine(quality_stub, quality_model, golden_processor):
    audio = make_audio(0.9, 48000, 2, seed=3)
    cfg = config(channels=2, candidates=2, predict_spans=True, span_gate=False, seed=5)
    sends = pieces(audio, 4001)
    result = separate(quality_stub, cfg, sends)
    target, residual = reference(quality_model, golden_processor, cfg, sends)
    np.testing.assert_allclose(result.target, target, atol=1e-6)
    np.testing.assert_allclose(result.residual, residual, atol=1e-6)
    engine, summary = reference.last.counters, result.summary
    assert summary.candidates_evaluated == engine.candidates_evaluated == 2 * 2 * summary.windows
    np.testing.assert_allclose(summary.chosen_scores, engine.chosen_scores, rtol=1e-6)
    assert len(summary.chosen_scores) == 2 * summary.windows
    eff = result.accepted.effective_config
    assert (eff.candidates, eff.predict_spans, eff.span_gate, eff.span_threshold) == (2, True, False, 0.3)


def test_the_gate_is_on_by_default_on_a_server_with_a_span_predictor(quality_stub):
    audio = make_audio(0.7, 48000, 1, seed=4)
    result = separate(quality_stub, config(span_threshold=1.0), pieces(audio, 9000))
    assert result.accepted.effective_config.span_gate
    assert result.summary.windows_gated == result.summary.windows > 0
    assert result.summary.model_evaluations == 0 and not result.target.any()
    np.testing.assert_allclose(result.residual, audio, atol=1e-6)
    assert list(result.summary.chosen_scores) == [] and result.summary.candidates_evaluated == 0


@pytest.mark.parametrize(
    "fields, option",
    [
        (dict(candidates=2), "--text-ranker"),
        (dict(predict_spans=True), "--span-predictor"),
        (dict(span_gate=True), "--span-predictor"),
    ],
)
def test_a_part_the_server_did_not_load_is_a_failed_precondition(stub, fields, option):
    audio = make_audio(0.2, 48000, 1, seed=1)
    code, details = status_of(lambda: separate(stub, config(**fields), [audio]))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "the server was started without" in details and f"server option {option}" in details


@pytest.mark.parametrize("candidates", [0, 9, -1])
def test_candidates_are_range_checked(quality_stub, candidates):
    code, details = status_of(lambda: separate(quality_stub, config(candidates=candidates), [np.zeros((10, 1), "f4")]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "outside 1..8" in details


def test_a_span_threshold_outside_0_to_1_is_invalid(quality_stub):
    code, details = status_of(lambda: separate(quality_stub, config(span_threshold=1.5), [np.zeros((10, 1), "f4")]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "0..1" in details


def test_samaudio_server_loads_the_parts_its_options_name(golden_dir):
    with server_process(
        "--model", str(golden_dir), "--text-ranker", "judge", "--judge-checkpoint", "judge",
        "--span-predictor", "span_predictor", "--max-candidates", "3",
    ) as (_, port, _):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            info = pb_grpc.SeparationServiceStub(ch).GetInfo(pb.GetInfoRequest(), timeout=30)
    model = info.models[0]
    assert (model.text_ranker, model.span_predictor, info.limits.max_candidates) == ("judge", "span_predictor", 3)


def test_the_python_client_sends_the_quality_settings_and_reads_the_scores(quality_server):
    from samaudio_client import Client

    audio = make_audio(0.6, 48000, 1, seed=6)
    with Client(quality_server) as client:
        stems = client.separate(
            audio, 48000, "a chirp", candidates=2, predict_spans=True, span_gate=False, chunk_seconds=CHUNK_SECONDS,
            overlap_seconds=OVERLAP_SECONDS, solver_steps=SOLVER_STEPS,
        )
        model = client.info().models[0]
    s = stems.summary
    assert (s.settings.candidates, s.settings.predict_spans, s.settings.span_gate) == (2, True, False)
    assert s.candidates_evaluated == 2 * s.windows and len(s.chosen_scores) == s.windows
    assert (model.text_ranker, model.span_predictor) == ("ensemble", "span_predictor")


def run_cli(python: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SAMAUDIO_TOKEN", "SAMAUDIO_SERVER")}
    env.setdefault("OMP_NUM_THREADS", "1")  # the server shares the cores in this process
    command = [python, "-m", "samaudio_client.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


FAST = ["--chunk-seconds", str(CHUNK_SECONDS), "--overlap-seconds", str(OVERLAP_SECONDS), "--steps", str(SOLVER_STEPS)]


def test_the_cli_flags_reach_the_server(thin_python, quality_server, tmp_path):
    sf.write(tmp_path / "take.wav", make_audio(0.9, 48000, 1, seed=7), 48000, subtype="FLOAT")
    args = ["separate", str(tmp_path / "take.wav"), "--text", "a chirp", "--server", quality_server, *FAST]
    result = run_cli(thin_python, *args, "--candidates", "2", "--predict-spans", "--no-span-gate")
    assert result.returncode == 0, result.stderr
    assert "2 candidates per window (" in result.stderr and "mean chosen score" in result.stderr
    assert "predicted spans" in result.stderr and "span gate" not in result.stderr
    gated = run_cli(thin_python, *args, "--span-gate")
    assert gated.returncode == 0 and "span gate (" in gated.stderr, gated.stderr
    info = run_cli(thin_python, "info", "--server", quality_server)
    assert "text ranker ensemble" in info.stdout and "span predictor span_predictor" in info.stdout, info.stdout


def test_the_cli_says_which_server_option_a_part_needs(thin_python, golden_server, tmp_path):  # noqa: F811
    sf.write(tmp_path / "take.wav", make_audio(0.3, 48000, 1, seed=8), 48000, subtype="FLOAT")
    server = f"127.0.0.1:{golden_server[1]}"
    result = run_cli(thin_python, "separate", str(tmp_path / "take.wav"), "--text", "x", "--server", server,
                     *FAST, "--candidates", "3")
    assert result.returncode == 3
    assert "server option --text-ranker" in result.stderr and "FAILED_PRECONDITION" in result.stderr, result.stderr


def test_samaudio_server_refuses_parts_for_an_untrained_preset():
    from samaudio_server.main import main

    with pytest.raises(SystemExit) as info:
        main(["--model", "demo-tiny", "--span-predictor", "pe-a-frame-large", "--port", "0"])
    assert "has no span_predictor" in str(info.value.code)
