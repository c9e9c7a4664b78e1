"""The server's device worker: one thread, a bounded queue, batches across streams, cancelled work dropped.

The model call is replaced by a recording function: these tests are about queueing and batching, not stems.
"""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from samaudio_server.worker import BatchingWorker, StreamWorker, WorkerClosedError


class GatedRun:
    """A run_batch that records each batch and, while `gate` is closed, holds the device thread in its call."""

    def __init__(self):
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()  # set once the device thread is inside a call
        self.threads: set[str] = set()

    def __call__(self, jobs):
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(jobs))
        self.entered.set()
        self.gate.wait(timeout=30)
        return [f"stems of {job}" for job in jobs]


@pytest.fixture
def run():
    run = GatedRun()
    yield run
    run.gate.set()


def test_each_submission_gets_its_own_results_in_order(run):
    run.gate.set()
    worker = BatchingWorker(run, max_batch=4)
    try:
        assert worker.submit(["a0", "a1"]).result(timeout=30) == ["stems of a0", "stems of a1"]
    finally:
        worker.close()


def test_submissions_queued_while_busy_are_batched_across_streams_up_to_max_batch(run):
    worker = BatchingWorker(run, max_batch=4)
    try:
        first = worker.submit(["a0"])
        assert run.entered.wait(30)  # the device is busy with a0
        b = worker.submit(["b0", "b1"])
        c = worker.submit(["c0", "c1"])
        d = worker.submit(["d0"])
        run.gate.set()
        assert b.result(30) == ["stems of b0", "stems of b1"]
        assert c.result(30) == ["stems of c0", "stems of c1"]
        assert d.result(30) == ["stems of d0"]
        assert first.result(30) == ["stems of a0"]
        # b and c fill a batch of 4; d does not fit and waits for the next call; submissions are never split
        assert run.batches == [["a0"], ["b0", "b1", "c0", "c1"], ["d0"]]
        assert worker.largest_batch == 4
    finally:
        worker.close()


def test_model_calls_all_run_on_the_one_device_thread(run):
    run.gate.set()
    worker = BatchingWorker(run, max_batch=2, name="the-device")
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: worker.submit([f"s{i}"]).result(30), range(8)))
        assert results == [[f"stems of s{i}"] for i in range(8)]
        assert run.threads == {"the-device"}
    finally:
        worker.close()


def test_cancelled_stream_windows_are_dropped_before_the_model(run):
    worker = BatchingWorker(run, max_batch=4)
    try:
        worker.submit(["a0"])
        assert run.entered.wait(30)
        stream = StreamWorker(worker)
        doomed = stream.submit(["x0", "x1"])
        alive = worker.submit(["b0"])
        stream.cancel()
        run.gate.set()
        assert alive.result(30) == ["stems of b0"]
        assert doomed.cancelled()
        assert all("x0" not in batch and "x1" not in batch for batch in run.batches)
        with pytest.raises(concurrent.futures.CancelledError):
            stream.submit(["x2"])
    finally:
        worker.close()


def test_the_worker_is_idle_only_once_nothing_is_queued_and_no_call_runs(run):
    worker = BatchingWorker(run, max_batch=1)
    try:
        assert worker.wait_idle(timeout=5)
        worker.submit(["a0"])
        assert run.entered.wait(30)
        assert worker.queued == 0 and not worker.wait_idle(timeout=0.2)  # nothing queued, but a0 runs
        worker.submit(["b0"])
        assert worker.queued == 1 and worker.wait_queued(1, timeout=5) and not worker.wait_queued(2, timeout=0.2)
        run.gate.set()
        assert worker.wait_idle(timeout=30)
        assert worker.queued == 0 and run.batches == [["a0"], ["b0"]]
    finally:
        worker.close()


def test_a_full_queue_blocks_the_submitter_until_there_is_room(run):
    worker = BatchingWorker(run, max_batch=1, max_queue=1)
    try:
        worker.submit(["a0"])
        assert run.entered.wait(30)
        worker.submit(["b0"])  # fills the queue
        submitted = threading.Event()
        threading.Thread(target=lambda: (worker.submit(["c0"]), submitted.set()), daemon=True).start()
        assert not submitted.wait(0.2), "a submission went into a full queue"
        run.gate.set()
        assert submitted.wait(30)
    finally:
        worker.close()


def test_a_failing_batch_fails_only_the_stream_that_caused_it():
    def run_batch(jobs):
        if "bad" in jobs:
            raise ValueError("bad window")
        return [f"stems of {job}" for job in jobs]

    gate = threading.Event()
    entered = threading.Event()

    def gated(jobs):
        if jobs == ["first"]:
            entered.set()
            gate.wait(30)
        return run_batch(jobs)

    worker = BatchingWorker(gated, max_batch=4)
    try:
        worker.submit(["first"])
        assert entered.wait(30)
        bad = worker.submit(["bad"])
        good = worker.submit(["good"])
        gate.set()
        assert good.result(30) == ["stems of good"]
        with pytest.raises(ValueError, match="bad window"):
            bad.result(30)
    finally:
        worker.close()


def test_a_stopped_stream_sharing_a_call_never_stops_the_others():
    # separate_windows raises StoppedError for the whole call when the windows of gone streams stop (issue 19)
    from samaudio.errors import StoppedError

    gate, entered = threading.Event(), threading.Event()

    def run_batch(jobs):
        if jobs == ["first"]:
            entered.set()
            gate.wait(30)
        if "gone" in jobs:
            raise StoppedError("separation stopped after 1 vector-field evaluations: should_stop() was true")
        return [f"stems of {job}" for job in jobs]

    worker = BatchingWorker(run_batch, max_batch=4)
    try:
        worker.submit(["first"])
        assert entered.wait(30)
        gone = worker.submit(["gone"])
        live = worker.submit(["live"])
        gate.set()
        assert live.result(30) == ["stems of live"]
        with pytest.raises(StoppedError):
            gone.result(30)
    finally:
        worker.close()


def test_close_fails_queued_work_and_refuses_new_work(run):
    worker = BatchingWorker(run, max_batch=1)
    worker.submit(["a0"])
    assert run.entered.wait(30)
    queued = worker.submit(["b0"])
    closer = threading.Thread(target=worker.close)
    closer.start()
    with pytest.raises(WorkerClosedError):
        queued.result(30)
    run.gate.set()
    closer.join(30)
    with pytest.raises(WorkerClosedError):
        worker.submit(["c0"])
