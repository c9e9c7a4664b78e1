"""Issue 17 over a real loopback server (golden model): several prompts in one stream, null-sum stems, a short
selection planned as one short window, progress inside a window, cancel between solver steps."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from samaudio.v1 import separation_pb2 as pb
from samaudio.v1 import separation_pb2_grpc as pb_grpc
from server_fixtures import (  # noqa: F401 - fixtures are used by name
    channel,
    config,
    from_bytes,
    golden_server,
    make_audio,
    pieces,
    requests,
    separate,
    status_of,
)

TOL = 1e-6


@pytest.fixture(scope="module")
def stub(channel):
    return pb_grpc.SeparationServiceStub(channel)


def prompt(description: str, anchors=(), seed=None) -> pb.Prompt:
    p = pb.Prompt(description=description, anchors=[pb.Anchor(sign=s, start_seconds=a, end_seconds=b)
                                                    for s, a, b in anchors])
    if seed is not None:
        p.seed = seed
    return p


def targets_of(result, cfg) -> list[np.ndarray]:
    n = len(result.blocks[0].prompt_target_audio)
    return [
        from_bytes(b"".join(b.prompt_target_audio[i] for b in result.blocks), cfg.sample_format, cfg.channel_count)
        for i in range(n)
    ]


PROMPTS = [
    prompt("a chirp"),
    prompt("low hum", [(pb.ANCHOR_SIGN_POSITIVE, 0.2, 0.9)], seed=5),
    prompt("", [(pb.ANCHOR_SIGN_NEGATIVE, 0.0, 0.3), (pb.ANCHOR_SIGN_POSITIVE, 0.5, 1.1)]),
]


def test_several_prompts_in_one_stream_equal_their_single_prompt_streams(stub):
    audio = make_audio(2.3, 44100, 2, seed=1)
    cfg = config(44100, 2, description="", prompts=PROMPTS)

    together = separate(stub, cfg, pieces(audio, 10000))
    targets = targets_of(together, cfg)

    assert len(targets) == 3 and all(b.target_audio == b"" for b in together.blocks)
    for p, t in zip(PROMPTS, targets):
        single = config(44100, 2, description=p.description, anchors=[(a.sign, a.start_seconds, a.end_seconds)
                                                                      for a in p.anchors])
        if p.HasField("seed"):
            single.seed = p.seed
        alone = separate(stub, single, pieces(audio, 7777))
        np.testing.assert_allclose(t, alone.target, atol=TOL, rtol=0)
    np.testing.assert_allclose(together.residual, audio - np.sum(targets, axis=0), atol=TOL, rtol=0)
    assert together.summary.model_evaluations == together.summary.windows * 4  # shared calls, 2 midpoint steps


@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["one", "three"])
def test_null_sum_float32_stems_add_back_up_to_the_input_to_the_last_bit(stub, prompts):
    audio = (np.round(make_audio(1.7, 44100, 2, seed=2) * 2**23) / 2**23).astype(np.float32)  # a 24-bit source
    cfg = config(44100, 2, description="", prompts=prompts, null_sum=True)

    result = separate(stub, cfg, pieces(audio, 3001))
    targets = targets_of(result, cfg)

    total = targets[0]
    for t in targets[1:]:
        total = total + t
    assert np.array_equal(total + result.residual, audio)


def test_null_sum_int16_stems_add_back_up_on_the_integers(stub):
    audio = make_audio(1.3, 48000, 1, seed=3)
    cfg = config(48000, 1, sample_format=pb.SAMPLE_FORMAT_INT16_LE, description="", prompts=PROMPTS[:2],
                 null_sum=True)

    result = separate(stub, cfg, pieces(audio, 4000))

    ints = [np.frombuffer(b"".join(b.prompt_target_audio[i] for b in result.blocks), "<i2").astype(np.int64)
            for i in range(2)]
    residual = np.frombuffer(result.residual_bytes, "<i2").astype(np.int64)
    sent = np.clip(np.rint(audio[:, 0] * 32768), -32768, 32767).astype(np.int64)
    assert np.array_equal(ints[0] + ints[1] + residual, sent)


def test_a_one_second_selection_is_planned_as_one_window_of_its_length(stub):
    audio = make_audio(1.0, 44100, 2, seed=4)
    cfg = config(44100, 2, chunk_seconds=10.0, overlap_seconds=2.0, total_frames=len(audio))

    result = separate(stub, cfg, pieces(audio, 5000))
    unplanned = separate(stub, config(44100, 2, chunk_seconds=10.0, overlap_seconds=2.0), pieces(audio, 5000))

    assert result.accepted.effective_config.chunk_seconds == pytest.approx(1.0)  # 25 frames of 40 ms, not 10 s
    assert result.accepted.effective_config.overlap_seconds == 0.0
    assert unplanned.accepted.effective_config.chunk_seconds == 10.0
    assert result.summary.windows == 1 and result.target.shape == audio.shape


def test_audio_past_the_stated_total_is_invalid_argument(stub):
    audio = make_audio(0.5, 48000, 1, seed=5)
    code, details = status_of(lambda: separate(stub, config(total_frames=1000), pieces(audio, 800)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "past its stated total of 1000" in details


def test_prompts_with_a_description_are_invalid_argument(stub):
    code, details = status_of(lambda: separate(stub, config(prompts=PROMPTS), [make_audio(0.2, 48000, 1, 0)]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "both a description" in details


def test_progress_moves_at_every_solver_step_inside_one_window(stub):
    audio = make_audio(0.9, 48000, 1, seed=6)
    cfg = config(total_frames=len(audio), solver_steps=5, description="", prompts=PROMPTS[:2])

    result = separate(stub, cfg, pieces(audio, len(audio)))

    assert result.summary.windows == 1
    done = [p.model_evaluations_done for p in result.progress if p.model_evaluations_done]
    planned = {p.model_evaluations_planned for p in result.progress if p.model_evaluations_done}
    assert planned == {20}  # 5 midpoint steps = 10 evaluations, for 2 prompts
    assert done == sorted(done) and sorted(set(done)) == list(range(1, 21))  # every evaluation is told, in order


@pytest.mark.parametrize("where", ["encoder", "solver", "decoder"])
def test_a_cancelled_stream_is_freed_within_one_solver_step_or_codec_layer(
    golden_server, golden_model, monkeypatch, where
):
    """The window waits on the device thread (in the codec's first residual unit of the encoder or decoder, or
    after the solver's third evaluation) until the server has run the stream's cancel; then no later step or
    unit may start."""
    from samaudio.model.codec import ResidualUnit
    from samaudio.streaming import StreamingSeparator

    server, port = golden_server
    told = threading.Event()  # the server ran the stream's cancel
    cancel = StreamingSeparator.cancel

    def cancel_and_tell(self) -> None:
        cancel(self)
        told.set()

    monkeypatch.setattr(StreamingSeparator, "cancel", cancel_and_tell)
    reached, units, evaluations = threading.Event(), [], []

    def wait_for_the_cancel() -> None:
        reached.set()
        told.wait(60)

    def at_unit(*_) -> None:
        units.append(1)
        if where != "solver" and len(units) == 1:
            wait_for_the_cancel()

    def at_evaluation(*_) -> None:
        evaluations.append(1)
        if where == "solver" and len(evaluations) == 3:
            wait_for_the_cancel()

    codec_part = golden_model.audio_codec.decoder if where == "decoder" else golden_model.audio_codec.encoder
    hooks = [m.register_forward_pre_hook(at_unit) for m in codec_part.modules() if isinstance(m, ResidualUnit)]
    hooks.append(golden_model.transformer.register_forward_hook(at_evaluation))  # one call per evaluation
    audio = make_audio(0.9, 48000, 1, seed=8)
    cfg = config(total_frames=len(audio), solver_steps=8)  # one window: 16 evaluations
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = pb_grpc.SeparationServiceStub(ch).Separate(requests(cfg, [audio]))
            assert reached.wait(60), f"the window never reached the {where}"
            call.cancel()
            assert server.servicer.gate.wait_idle(timeout=60), "the cancelled stream was never freed"
            # the stream is freed at once; the counts below are final once the model call it ran in has ended
            assert server.servicer.worker.wait_idle(timeout=60), "the stopped window never left the device"
    finally:
        for hook in hooks:
            hook.remove()
    assert told.is_set()
    assert len(evaluations) == {"encoder": 0, "solver": 3, "decoder": 16}[where]  # no step after the cancel
    if where != "solver":
        assert len(units) == 1  # the unit running at the cancel ends the work: no later unit starts
