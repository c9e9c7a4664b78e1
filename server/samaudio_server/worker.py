"""The device worker: one thread owns the model and runs windows from every stream, batched.

Streams submit their windows (`samaudio.streaming.WindowJob`) and block on a future; the worker takes
submissions off a bounded queue in arrival order, packs whole submissions from several streams into one model
call of at most `max_batch` windows, and hands each stream its own stems back. A full queue blocks the
submitting stream, which stops reading its requests, so gRPC flow control pushes back on the client.

A submission whose future was cancelled (its stream went away) is dropped before it reaches the model.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from samaudio.defaults import STREAM_DEFAULTS
from samaudio_server.errors import WorkerClosedError

logger = logging.getLogger(__name__)

RunBatch = Callable[[Sequence[Any]], list[Any]]  # WindowJobs -> their WindowStems, in order


@dataclass
class _Submission:
    jobs: list[Any]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class BatchingWorker:
    """A `WindowWorker` with a thread that owns the device, a bounded queue, and batching across streams."""

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch: int = STREAM_DEFAULTS.windows_per_device_batch,
        max_queue: int = 32,
        name: str = "samaudio-device",
    ):
        if max_batch < 1 or max_queue < 1:
            raise ValueError(f"max_batch={max_batch} and max_queue={max_queue} must both be >= 1")
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.model_calls = 0  # batches run, for logs and tests
        self.largest_batch = 0  # most windows in one model call so far
        self._run_batch = run_batch
        self._queue: collections.deque[_Submission] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._running = False  # a model call is running on the device thread
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @classmethod
    def for_model(cls, model: Any, processor: Any, **kwargs: Any) -> "BatchingWorker":
        """A worker that runs windows with the library's `separate_windows`, on `model`'s device."""
        from samaudio.streaming import separate_windows

        return cls(functools.partial(separate_windows, model, processor), **kwargs)

    @property
    def queued(self) -> int:
        """Submissions waiting for the device thread, for logs and tests."""
        with self._cond:
            return len(self._queue)

    def wait_queued(self, count: int, timeout: float | None = None) -> bool:
        """Wait until at least `count` submissions wait for the device thread; False if `timeout` passes first."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._queue) >= count, timeout)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued and no model call runs (a cancelled stream is freed before the call it
        shared ends); False if `timeout` seconds pass first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._running, timeout)

    # ------------------------------------------------------------------ the WindowWorker protocol

    def submit(self, jobs: Sequence[Any]) -> concurrent.futures.Future:
        """Queue one stream's windows; the future gives their stems in order. Blocks while the queue is full."""
        sub = _Submission(list(jobs))
        if not sub.jobs:
            sub.future.set_result([])
            return sub.future
        with self._cond:
            self._cond.wait_for(lambda: self._closed or len(self._queue) < self.max_queue)
            if self._closed:
                raise WorkerClosedError("the device worker is shut down; no more windows are run")
            self._queue.append(sub)
            self._cond.notify_all()
        return sub.future

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, fail what is still queued, and join the thread."""
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for sub in pending:
            if sub.future.set_running_or_notify_cancel():
                sub.future.set_exception(WorkerClosedError("the device worker shut down before this window ran"))
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the device thread

    def _take(self) -> list[_Submission] | None:
        """Wait for work; return live submissions totalling at most max_batch windows (None once closed)."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._queue)
            if self._closed:
                return None
            taken: list[_Submission] = []
            size = 0
            while self._queue:
                head = self._queue[0]
                if taken and size + len(head.jobs) > self.max_batch:
                    break  # whole submissions only: a stream's windows stay in one call
                self._queue.popleft()
                if not head.future.set_running_or_notify_cancel():
                    continue  # its stream was cancelled: drop it
                taken.append(head)
                size += len(head.jobs)
            self._running = bool(taken)
            self._cond.notify_all()  # room in the queue for blocked submitters
            return taken

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            if taken:
                try:
                    self._run(taken)
                finally:
                    with self._cond:
                        self._running = False
                        self._cond.notify_all()

    def _run(self, taken: list[_Submission]) -> None:
        jobs = [job for sub in taken for job in sub.jobs]
        self.model_calls += 1
        self.largest_batch = max(self.largest_batch, len(jobs))
        try:
            stems = self._run_batch(jobs)
        except BaseException as e:  # noqa: BLE001 - every failure must reach the waiting streams
            if len(taken) > 1:
                # also for StoppedError: one group of the call may have stopped (its streams went away) while
                # another, of live streams, was done or still to run
                # a bad stream never disturbs the others: run each submission alone, so only its own fails
                logger.warning("batch of %d streams failed (%s); running them one by one", len(taken), e)
                for sub in taken:
                    self._run_one(sub)
                return
            for sub in taken:
                sub.future.set_exception(e)
            return
        assert len(stems) == len(jobs), f"run_batch returned {len(stems)} results for {len(jobs)} jobs"
        start = 0
        for sub in taken:
            sub.future.set_result(stems[start : start + len(sub.jobs)])
            start += len(sub.jobs)

    def _run_one(self, sub: _Submission) -> None:
        try:
            sub.future.set_result(self._run_batch(sub.jobs))
        except BaseException as e:  # noqa: BLE001
            sub.future.set_exception(e)


class StreamWorker:
    """One stream's view of the shared worker: remembers its futures so that `cancel()` drops its queued windows."""

    def __init__(self, worker: BatchingWorker):
        self._worker = worker
        self._futures: set[concurrent.futures.Future] = set()
        self._lock = threading.Lock()
        self._cancelled = False

    def submit(self, jobs: Sequence[Any]) -> concurrent.futures.Future:
        if self._cancelled:
            raise concurrent.futures.CancelledError("the stream was cancelled")
        future = self._worker.submit(jobs)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        if self._cancelled:  # cancelled while we were queueing
            future.cancel()
        return future

    def cancel(self) -> None:
        """Cancel every window of this stream not yet running; the worker skips them."""
        self._cancelled = True
        with self._lock:
            futures = list(self._futures)
        for future in futures:
            future.cancel()

    def _forget(self, future: concurrent.futures.Future) -> None:
        with self._lock:
            self._futures.discard(future)
