"""Scale-out: windows separated on a Ray Serve deployment, one replica per GPU, behind the same front door.

The gRPC servicer stays the one front door (TLS, tokens, health, reflection, limits, drain). Behind the
`WindowWorker` seam, `RayWorker` sends every window of every stream to the `SeparationReplica` deployment as
its own request, so one stream's windows spread over all replicas; each replica batches the windows it holds
(from any stream) into one model call with `@serve.batch`. The future a stream waits on resolves once all its
windows are back, in order: that future is the stream's reorder buffer, and the engine stitches windows in
order as before.

    ray start --head                        # on one box
    ray start --address HEAD:6379           # on each GPU box
    samaudio-server --backend ray --model facebook/sam-audio-small   # on the head: the front door

Why windows may go anywhere and be retried: a window's job carries everything it needs (its mixture samples,
the stream's text features, its anchors, and starting noise that depends only on (seed, absolute frame)), so
running it twice, or on another replica, gives the same stems. A replica that dies with windows in flight
(Ray raises `ActorDiedError` and does not retry for you) costs a resubmission of those windows, which Serve
routes to a live replica; the stream never sees it.

Backpressure: a stream has at most its windows-per-call in flight (the engine waits for them); each replica
takes `max_ongoing_requests` windows and queues at most `max_queued_requests` more per front door; past that
Serve raises `BackPressureError`, which ends the stream with RESOURCE_EXHAUSTED (`ClusterBusyError`).

Transport: windows go by reference through Ray's object store (a 10 s stereo window is 3.84 MB); we keep
Serve's default transport (not `RAY_SERVE_USE_GRPC_BY_DEFAULT`, whose 4 MB message cap a window nearly fills).
Streaming handles are not needed (one request, one response), so the front door must be a driver on a cluster
node (`ray.init(address="auto")`), not a Ray Client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from samaudio_server.errors import ClusterBusyError, WorkerClosedError

logger = logging.getLogger(__name__)

APP_NAME = "samaudio"
DEPLOYMENT_NAME = "SeparationReplica"
RETRIES = 4  # resubmissions of one window after its replica died, before the stream fails
RETRY_PAUSE_SECONDS = 0.5  # first pause before a resubmission (doubles): the controller needs a moment to notice


@dataclass(frozen=True)
class ReplicaSpec:
    """What every replica loads: the same model, on its own device."""

    model: str  # hub id, local folder or preset name, as `samaudio-server --model` takes it
    dtype: str | None = None
    vision: bool = False
    windows_per_batch: int = 4  # windows of any streams per model call on a replica (`@serve.batch`)
    threads: int | None = None  # torch intra-op threads of a replica (None: torch's default)


@dataclass(frozen=True)
class ReplicaInfo:
    """What the front door needs to know of the model it never loads."""

    sample_rate: int
    hop_length: int
    latent_width: int  # 2C: the noise width of a window
    vision: bool


class SeparationReplica:
    """One replica: loads the model once on its device and runs batched windows. Deployed by `deploy`."""

    def __init__(self, spec: ReplicaSpec):
        import torch
        from ray import serve

        from samaudio_server import models

        if spec.threads is not None:
            torch.set_num_threads(spec.threads)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.model, self.processor = models.load(spec.model, dtype=spec.dtype, vision=spec.vision)
        self.separate.set_max_batch_size(spec.windows_per_batch)
        logger.info("replica %s ready with %s on %s", self.replica_id, spec.model, self.model.device)

    def describe(self) -> ReplicaInfo:
        return ReplicaInfo(
            sample_rate=int(self.model.sample_rate),
            hop_length=int(self.model.hop_length),
            latent_width=int(self.model.noise_width) if hasattr(self.model, "noise_width") else 0,
            vision=getattr(self.model, "vision_encoder", None) is not None,
        )

    async def encode_text(self, description: str) -> Any:
        return await asyncio.to_thread(self.model.encode_text, [description])

    async def separate(self, jobs: list[Any]) -> list[tuple[str, Any]]:
        """Windows of any streams, batched: (this replica's id, its `WindowStems`) per job, in order."""
        from samaudio.streaming import separate_windows

        # one batch at a time per replica (serve.batch's default): the model is used by one thread at a time
        stems = await asyncio.to_thread(separate_windows, self.model, self.processor, jobs)
        return [(self.replica_id, s) for s in stems]


def deploy(
    spec: ReplicaSpec,
    *,
    replicas: int,
    gpus_per_replica: float = 1.0,
    max_ongoing_requests: int = 8,
    max_queued_requests: int = 64,
    name: str = APP_NAME,
) -> Any:
    """Start (or update) the application `name` on the connected Ray cluster and return its handle.

    `gpus_per_replica` is 1 for one replica per GPU; a fraction packs replicas onto shared GPUs."""
    from ray import serve

    cls = type(SeparationReplica.__name__, (SeparationReplica,), {})
    # serve.batch wraps the coroutine per class; a small wait lets windows of several streams meet in one call
    cls.separate = serve.batch(max_batch_size=spec.windows_per_batch, batch_wait_timeout_s=0.005)(
        SeparationReplica.separate
    )
    deployment = serve.deployment(
        cls,
        name=DEPLOYMENT_NAME,
        num_replicas=replicas,
        ray_actor_options={"num_gpus": gpus_per_replica, "num_cpus": 0},
        max_ongoing_requests=max_ongoing_requests,
        max_queued_requests=max_queued_requests,
    )
    return serve.run(deployment.bind(spec), name=name, route_prefix=None)


class RayWorker:
    """A `WindowWorker` that runs windows on the deployment: one request per window, results in order."""

    def __init__(self, handle: Any, *, retries: int = RETRIES, retry_pause: float = RETRY_PAUSE_SECONDS):
        self._handle = handle
        self._retries = retries
        self._retry_pause = retry_pause
        self._closed = False
        self._lock = threading.Lock()
        self.windows_by_replica: dict[str, int] = {}  # for logs, tests and the bench
        self.resubmitted = 0  # windows sent again after their replica died
        self._waiters = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="samaudio-ray")
        self.info: ReplicaInfo = handle.describe.remote().result()

    def encode_text(self, descriptions: Sequence[str]) -> Any:
        (description,) = descriptions
        return self._handle.encode_text.remote(description).result()

    def submit(self, jobs: Sequence[Any]) -> concurrent.futures.Future:
        if self._closed:
            raise WorkerClosedError("the cluster worker is shut down; no more windows are run")
        future: concurrent.futures.Future = concurrent.futures.Future()
        if not jobs:
            future.set_result([])
            return future
        responses = [self._send(job) for job in jobs]

        def cancel_responses(f: concurrent.futures.Future) -> None:
            if f.cancelled():  # the stream went away: stop its windows on the replicas
                for r in responses:
                    r.cancel()

        future.add_done_callback(cancel_responses)
        self._waiters.submit(self._gather, list(jobs), responses, future)
        return future

    def close(self, timeout: float | None = None) -> None:
        self._closed = True
        self._waiters.shutdown(wait=timeout is None or timeout > 0, cancel_futures=True)

    def _send(self, job: Any) -> Any:
        from ray.serve.exceptions import BackPressureError

        try:
            return self._handle.separate.remote(job)
        except BackPressureError as e:
            raise ClusterBusyError(
                "every replica is busy and their queues are full: retry later, or add replicas"
            ) from e

    def _gather(self, jobs: list[Any], responses: list[Any], future: concurrent.futures.Future) -> None:
        try:
            stems = [self._result(job, response, future) for job, response in zip(jobs, responses)]
        except BaseException as e:  # noqa: BLE001 - delivered to the waiting stream
            if not future.done():
                future.set_exception(e)
            return
        if not future.done():  # a cancelled stream's future is done already
            future.set_result(stems)

    def _result(self, job: Any, response: Any, future: concurrent.futures.Future) -> Any:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
        from ray.serve.exceptions import ReplicaUnavailableError, RequestCancelledError

        pause = self._retry_pause
        for attempt in range(self._retries + 1):
            try:
                replica, stems = response.result()
            except RequestCancelledError:
                raise concurrent.futures.CancelledError("the stream was cancelled") from None
            except (ActorDiedError, ActorUnavailableError, RayActorError, ReplicaUnavailableError) as e:
                if attempt == self._retries or future.done():
                    raise
                logger.warning("a replica died with window %d in flight (%s): sending it again", job.index,
                               type(e).__name__)
                time.sleep(pause)
                pause *= 2
                with self._lock:
                    self.resubmitted += 1
                response = self._send(job)
                continue
            with self._lock:
                self.windows_by_replica[replica] = self.windows_by_replica.get(replica, 0) + 1
            return stems
        raise AssertionError("unreachable")
