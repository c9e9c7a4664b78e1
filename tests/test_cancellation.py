"""Work for a caller that went away stops at the next solver step (issue 19): `SAMAudio.separate(should_stop=...)`,
and a cancelled stream's windows through the streaming engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samaudio.errors import CancelledError, StoppedError
from samaudio.model.model import midpoint_ode_opt
from samaudio.streaming import LocalWorker, StreamingSeparator, separate_windows

STEPS = 8  # midpoint: two vector-field evaluations per step


def _batch(processor, seconds: float = 0.3):
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal((1, int(48000 * seconds))).astype(np.float32))
    return processor(descriptions=["a chirp"], audios=[0.1 * audio])


def test_separate_stops_at_the_next_solver_step_once_should_stop_is_true(golden_model, golden_processor):
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 3  # three evaluations run, the fourth is refused

    with pytest.raises(StoppedError, match="after 3 vector-field evaluations"):
        golden_model.separate(_batch(golden_processor), ode_opt=midpoint_ode_opt(STEPS), should_stop=should_stop)
    assert len(asked) == 4


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
        inner = jobs[0].should_stop
        calls = []

        def stop_after_two() -> bool:  # the stream goes away as the second evaluation is about to start
            calls.append(1)
            if len(calls) == 2:
                self.separator.cancel()
            return inner()

        jobs[0].should_stop = stop_after_two
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
