"""The streaming engine on bad input and at the end of a stream: named errors before any model work, a bad
block rejected whole (the stream stays usable), and cancel / finish / worker failures closing it cleanly.

The model's work is not under test here: windows go to stand-in workers; the golden model only gives the
engine its geometry (hop, rate, latent width) and encodes the description.
"""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np
import pytest
from server_fixtures import EchoWorker

from samaudio.errors import (
    CancelledError,
    InvalidAnchorError,
    InvalidAudioError,
    InvalidRequestError,
    SAMAudioError,
    StreamClosedError,
)
from samaudio.streaming import StreamingSeparator, StreamSettings


class PendingWorker:
    """A worker whose futures stay pending, like a busy device queue; says when a submission arrived."""

    def __init__(self):
        self.submitted = threading.Event()
        self.futures = []

    def submit(self, jobs):
        future = concurrent.futures.Future()
        self.futures.append(future)
        self.submitted.set()
        return future


class FailingWorker:
    def submit(self, jobs):
        future = concurrent.futures.Future()
        future.set_exception(RuntimeError("device lost"))
        return future


ARGS = dict(sample_rate=44100, channels=2, chunk_seconds=0.2, overlap_seconds=0.08)


def make(model, processor, worker=None, description="a dog barking", anchors=(), **kw):
    return StreamingSeparator(model, processor, description, anchors, **{**ARGS, **kw},
                              worker=worker if worker is not None else EchoWorker())


def noise(frames: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal((frames, channels))).astype(np.float32)


def targets(blocks) -> np.ndarray:
    return np.concatenate([b.target for b in blocks])


# ----------------------------------------------------------------------------------------------------------
# arguments


BAD_ARGUMENTS = [
    (dict(sample_rate=0), InvalidAudioError, "sample_rate is 0"),
    (dict(sample_rate=-44100), InvalidAudioError, "positive integer"),
    (dict(sample_rate=44100.0), InvalidAudioError, "positive integer"),
    (dict(sample_rate=44101), InvalidAudioError, "standard rate"),
    (dict(channels=0), InvalidAudioError, "channels is 0"),
    (dict(channels=-2), InvalidAudioError, "positive integer"),
    (dict(chunk_seconds=1.0, overlap_seconds=1.0), InvalidRequestError, "must be longer than overlap"),
    (dict(chunk_seconds=0.4, overlap_seconds=1.0), InvalidRequestError, "must be longer than overlap"),
    (dict(chunk_seconds=0.05, overlap_seconds=0.03), InvalidRequestError, r"\(1 frames"),  # both round to 1 frame
    (dict(chunk_seconds=401.0), InvalidRequestError, "position table holds 10000"),
    (dict(overlap_seconds=-0.5), InvalidRequestError, "0 or more seconds"),
    (dict(chunk_seconds=float("nan")), InvalidRequestError, "finite"),
    (dict(max_batch=0), InvalidRequestError, "max_batch"),
    (dict(seed=1.5), InvalidRequestError, "seed"),
    (dict(ode_opt="midpoint"), InvalidRequestError, "ode_opt"),
    (dict(description=""), InvalidRequestError, "description is empty"),
    (dict(description="", anchors=[("-", 0.0, 1.0)]), InvalidRequestError, "no anchor marks the sound present"),
    (dict(description=None), InvalidRequestError, "description"),
    (dict(anchors=[("x", 0.0, 1.0)]), InvalidAnchorError, r"anchors\[0\] has sign 'x'"),
    (dict(anchors=[("+", 0.5, 1.0), ("-", 1.0, 1.0)]), InvalidAnchorError, r"anchors\[1\] starts at 1.0 s"),
    (dict(anchors=[("+", -1.0, 1.0)]), InvalidAnchorError, "count from 0 s"),
    (dict(anchors=[("+", 0.0, float("inf"))]), InvalidAnchorError, "non-finite"),
    (dict(anchors=[("+", 0.0)]), InvalidAnchorError, "triple"),
    (dict(anchors="+ 0 1"), InvalidAnchorError, "list"),
]


@pytest.mark.parametrize("override, error, message", BAD_ARGUMENTS, ids=[str(a[0]) for a in BAD_ARGUMENTS])
def test_bad_arguments_raise_named_errors_before_any_model_work(golden_model, golden_processor, override, error,
                                                                message):
    worker = EchoWorker()
    with pytest.raises(error, match=message):
        make(golden_model, golden_processor, worker, **override)
    kw = {**ARGS, **override}
    description, anchors = kw.pop("description", "a dog barking"), kw.pop("anchors", ())
    with pytest.raises(error, match=message):
        StreamSettings.check(golden_model, description, anchors, **kw)
    assert issubclass(error, SAMAudioError)
    assert worker.calls == []


def test_an_empty_description_is_allowed_with_anchors(golden_model, golden_processor):
    sep = make(golden_model, golden_processor, description="", anchors=[("+", 0.1, 0.2)])
    assert len(targets(sep.push(noise(44100)) + sep.finish())) == 44100


# ----------------------------------------------------------------------------------------------------------
# bad blocks are rejected whole


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((500, 1), np.float32), r"shape \(500, 1\) was pushed to a stream of 2 channel"),
        (np.zeros((500, 3), np.float32), r"shape \(500, 3\)"),
        (np.zeros(1000, np.float32), r"shape \(1000,\)"),
        (np.zeros((500, 2), np.int16), "dtype int16"),
    ],
    ids=["mono", "three channels", "1-D", "int16"],
)
def test_a_block_of_the_wrong_shape_or_type_is_rejected_and_the_stream_stays_usable(golden_model, golden_processor,
                                                                                   bad, message):
    x = noise(30000)
    reference = make(golden_model, golden_processor)
    expected = targets(reference.push(x[:20000]) + reference.push(x[20000:]) + reference.finish())

    worker = EchoWorker()
    sep = make(golden_model, golden_processor, worker)
    blocks = sep.push(x[:20000])
    calls = len(worker.calls)
    with pytest.raises(InvalidAudioError, match=message):
        sep.push(bad)
    assert sep.counters.frames_in == 20000 and len(worker.calls) == calls  # nothing of it was taken in or run
    blocks += sep.push(x[20000:]) + sep.finish()
    np.testing.assert_array_equal(targets(blocks), expected)


def test_a_block_with_non_finite_samples_is_rejected_whole(golden_model, golden_processor):
    x = noise(30000)
    reference = make(golden_model, golden_processor)
    expected = targets(reference.push(x) + reference.finish())

    sep = make(golden_model, golden_processor)
    blocks = sep.push(x[:10000])
    bad = x[10000:].copy()
    bad[123, 1] = np.nan
    bad[4000, 0] = np.inf
    with pytest.raises(InvalidAudioError, match=r"2 sample\(s\) that are NaN, infinite or beyond.*at frame 10123 "):
        sep.push(bad)
    assert sep.counters.frames_in == 10000
    blocks += sep.push(x[10000:]) + sep.finish()
    np.testing.assert_array_equal(targets(blocks), expected)


def test_float64_blocks_are_taken_as_float32(golden_model, golden_processor):
    x = noise(20000)
    a = make(golden_model, golden_processor)
    b = make(golden_model, golden_processor)
    np.testing.assert_array_equal(
        targets(a.push(x.astype(np.float64)) + a.finish()), targets(b.push(x) + b.finish())
    )


# ----------------------------------------------------------------------------------------------------------
# the end of a stream: finish, cancel, worker failures


def test_a_finished_stream_refuses_more(golden_model, golden_processor):
    sep = make(golden_model, golden_processor)
    sep.push(noise(5000))
    sep.finish()
    with pytest.raises(StreamClosedError, match="finished"):
        sep.push(noise(10))
    with pytest.raises(StreamClosedError):
        sep.finish()


def test_cancel_stops_between_windows(golden_model, golden_processor):
    worker = EchoWorker()
    sep = make(golden_model, golden_processor, worker, max_batch=1, on_progress=lambda done, known: sep.cancel())
    with pytest.raises(CancelledError, match="before window 1"):
        sep.push(noise(44100))
    assert len(worker.calls) == 1  # the window running when cancel came finished; no other started
    assert sep.closed and sep.held_samples == 0
    with pytest.raises(StreamClosedError, match="cancelled"):
        sep.push(noise(10))
    with pytest.raises(StreamClosedError, match="cancelled"):
        sep.finish()


def test_cancel_from_another_thread_drops_the_pending_window(golden_model, golden_processor):
    worker = PendingWorker()
    sep = make(golden_model, golden_processor, worker)
    raised = []

    def push():
        try:
            sep.push(noise(44100))
        except BaseException as e:
            raised.append(e)

    thread = threading.Thread(target=push)
    thread.start()
    assert worker.submitted.wait(60)
    sep.cancel()
    thread.join(60)
    assert not thread.is_alive()
    assert [type(e) for e in raised] == [CancelledError]
    assert worker.futures[0].cancelled() and len(worker.futures) == 1
    with pytest.raises(StreamClosedError):
        sep.push(noise(10))


def test_cancel_closes_an_idle_stream_and_may_be_repeated(golden_model, golden_processor):
    sep = make(golden_model, golden_processor)
    sep.push(noise(3000))
    sep.cancel()
    sep.cancel()
    assert sep.closed and sep.held_samples == 0
    with pytest.raises(StreamClosedError):
        sep.push(noise(10))


def test_a_worker_error_closes_the_stream(golden_model, golden_processor):
    sep = make(golden_model, golden_processor, FailingWorker())
    with pytest.raises(RuntimeError, match="device lost"):
        sep.push(noise(44100))
    assert sep.closed
    with pytest.raises(StreamClosedError, match="RuntimeError"):
        sep.push(noise(10))
