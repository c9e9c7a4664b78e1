"""Work for a caller that went away stops at the next solver step or codec layer (issues 17, 19):
`SAMAudio.separate(should_stop=...)`, and a cancelled stream's windows through the streaming engine."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from samaudio.errors import CancelledError, StoppedError
from samaudio.model.codec import ResidualUnit
from samaudio.model.model import midpoint_ode_opt
from samaudio.streaming import LocalWorker, StreamingSeparator, separate_windows

STEPS = 8  # midpoint: two vector-field evaluations per step


def _batch(processor, seconds: float = 0.3):
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal((1, int(48000 * seconds))).astype(np.float32))
    return processor(descriptions=["a chirp"], audios=[0.1 * audio])


def test_separate_stops_at_the_next_solver_step_once_should_stop_is_true(golden_model, golden_processor):
    evaluations = []

    with pytest.raises(StoppedError, match="after 3 vector-field evaluations"):
        golden_model.separate(
            _batch(golden_processor), ode_opt=midpoint_ode_opt(STEPS), on_step=evaluations.append,
            should_stop=lambda: len(evaluations) >= 3,  # three evaluations run, the fourth is refused
        )  # fmt: skip
    assert evaluations == [1, 2, 3]


def _unit_calls(module: torch.nn.Module) -> tuple[list[int], list]:
    """Counts the codec's residual units (the bulk of its layers) as they start: (calls, hooks to remove)."""
    calls: list[int] = []
    units = [m for m in module.modules() if isinstance(m, ResidualUnit)]
    hooks = [m.register_forward_pre_hook(lambda *_: calls.append(1)) for m in units]
    return calls, hooks


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_separate_stops_at_the_next_codec_layer_when_asked_while_encoding_or_decoding(
    golden_model, golden_processor, part
):
    calls, hooks = _unit_calls(getattr(golden_model.audio_codec, part))
    evaluations = []
    try:
        with pytest.raises(StoppedError, match="codec stopped between two layers"):
            golden_model.separate(
                _batch(golden_processor), ode_opt=midpoint_ode_opt(STEPS), on_step=evaluations.append,
                should_stop=lambda: len(calls) > 0,  # the caller goes away while the first unit runs
            )  # fmt: skip
    finally:
        for hook in hooks:
            hook.remove()
    assert len(calls) == 1  # the unit running at the cancel finishes; no later layer starts
    assert len(evaluations) == (0 if part == "encoder" else 2 * STEPS)


def test_separate_runs_to_the_end_while_should_stop_is_false(golden_model, golden_processor):
    batch = _batch(golden_processor)
    message = torch.zeros(2, 16)  # the watermark is random otherwise
    full = golden_model.separate(batch, ode_opt=midpoint_ode_opt(STEPS), watermark_message=message)
    watched = golden_model.separate(
        batch, noise=full.noise, ode_opt=midpoint_ode_opt(STEPS), watermark_message=message, should_stop=lambda: False
    )
    assert watched.nfe == full.nfe == 2 * STEPS
    torch.testing.assert_close(watched.target[0], full.target[0], rtol=0, atol=0)


class _CancelInsideWorker(LocalWorker):
    """Cancels the stream from inside the model call, as a server's RPC-termination callback would."""

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.separator: StreamingSeparator | None = None
        self.raised: list[BaseException] = []

    def submit(self, jobs):
        jobs = list(jobs)

        def cancel_after_one(evaluations: int) -> None:  # the stream goes away as the first evaluation ends
            if evaluations == 1:
                self.separator.cancel()

        jobs[0].on_step = cancel_after_one
        future = super().submit(jobs)
        if future.exception() is not None:
            self.raised.append(future.exception())
        return future


def test_a_cancelled_stream_stops_its_running_window_between_solver_steps(golden_model, golden_processor):
    worker = _CancelInsideWorker(golden_model, golden_processor)
    sep = StreamingSeparator(
        golden_model, golden_processor, "a chirp", sample_rate=48000, channels=1, chunk_seconds=1.0,
        overlap_seconds=0.2, ode_opt=midpoint_ode_opt(STEPS), max_batch=1, worker=worker,
    )  # fmt: skip
    worker.separator = sep
    with pytest.raises(CancelledError):
        sep.push(np.zeros((48000, 1), np.float32))
    assert [type(e) for e in worker.raised] == [StoppedError]
    assert "after 1 vector-field evaluations" in str(worker.raised[0])
    assert sep.closed


def test_a_call_shared_by_several_streams_stops_only_when_all_are_gone(golden_model, golden_processor):
    stopped = {"a": False, "b": False}
    seps = {
        name: StreamingSeparator(
            golden_model, golden_processor, "a chirp", sample_rate=48000, channels=1, chunk_seconds=0.4,
            overlap_seconds=0.0, ode_opt=midpoint_ode_opt(STEPS),
        )  # fmt: skip
        for name in stopped
    }
    jobs = []
    for name, sep in seps.items():
        sep.push(np.zeros((100, 1), np.float32))
        job = sep._job(0)
        job.should_stop = lambda name=name: stopped[name]
        jobs.append(job)
    stopped["a"] = True
    assert [s.nfe for s in separate_windows(golden_model, golden_processor, jobs)] == [2 * STEPS] * 2
    stopped["b"] = True
    with pytest.raises(StoppedError):
        separate_windows(golden_model, golden_processor, jobs)


def test_cancelling_a_stream_is_the_one_entry_point_that_also_cancels_its_worker(golden_model, golden_processor):
    """`StreamingSeparator.cancel()` drops the stream's queued windows through its worker's `cancel` (a stream's view
    of a shared pool has one), so a caller has one thing to call."""

    class CancellableWorker(LocalWorker):
        cancels = 0

        def cancel(self) -> None:
            self.cancels += 1

    worker = CancellableWorker(golden_model, golden_processor)
    sep = StreamingSeparator(golden_model, golden_processor, "a chirp", sample_rate=48000, channels=1, worker=worker)
    sep.push(np.zeros((100, 1), np.float32))
    sep.cancel()
    assert worker.cancels == 1 and sep.closed


def test_a_cancelled_stream_is_freed_at_once_while_the_call_it_shares_runs_on_for_the_other_stream(
    golden_model, golden_processor
):
    """Streams A and B share one model call on the server's device worker. A is cancelled while the call is held
    on the device: A's push ends at once with `CancelledError`, and when the call goes on B gets the stems it gets
    alone (issue 17: a shared window keeps running for the others only; the cancelled stream is not kept waiting)."""
    from samaudio_server.worker import BatchingWorker

    calls: list[int] = []
    release = [threading.Event(), threading.Event()]  # the device waits in its first and second call
    inside = [threading.Event(), threading.Event()]

    def run_batch(jobs):
        n = len(calls)
        calls.append(len(jobs))
        if n < 2:
            inside[n].set()
            assert release[n].wait(60)
        return separate_windows(golden_model, golden_processor, jobs)

    audio = {name: (0.1 * np.random.default_rng(seed).standard_normal((19200, 1))).astype(np.float32)
             for seed, name in enumerate("CAB")}  # fmt: skip

    def separator(worker):
        return StreamingSeparator(
            golden_model, golden_processor, "a chirp", sample_rate=48000, channels=1, total_frames=19200,
            ode_opt=midpoint_ode_opt(2), worker=worker,
        )  # fmt: skip

    worker = BatchingWorker(run_batch, max_batch=4)
    seps = {name: separator(worker) for name in "CAB"}
    results: dict[str, object] = {}

    def run(name):
        try:
            results[name] = seps[name].push(audio[name]) + seps[name].finish()
        except BaseException as e:  # noqa: BLE001 - the test reads it
            results[name] = e

    threads = {name: threading.Thread(target=run, args=(name,), daemon=True) for name in "CAB"}
    try:
        threads["C"].start()  # C holds the device, so that A and B queue and are taken together
        assert inside[0].wait(60)
        threads["A"].start()
        threads["B"].start()
        assert worker.wait_queued(2, timeout=60), "A and B never queued"
        release[0].set()
        assert inside[1].wait(60) and calls == [1, 2]  # A's and B's windows in one call, held on the device
        seps["A"].cancel()
        threads["A"].join(10)
        assert not threads["A"].is_alive(), "the cancelled stream waited for the call it shares"
        assert isinstance(results["A"], CancelledError), results["A"]
        assert "B" not in results  # the shared call is still held
        release[1].set()
        threads["B"].join(60)
    finally:
        for event in release:
            event.set()
        worker.close(timeout=60)
    alone = separator(LocalWorker(golden_model, golden_processor))
    want = np.concatenate([b.target for b in alone.push(audio["B"]) + alone.finish()])
    got = np.concatenate([b.target for b in results["B"]])
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
