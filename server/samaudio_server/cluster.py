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
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from samaudio_server.errors import ClusterBusyError, ClusterUnavailableError, WorkerClosedError

logger = logging.getLogger(__name__)

APP_NAME = "samaudio"
DEPLOYMENT_NAME = "SeparationReplica"
RETRIES = 4  # resubmissions of one window after its replica died, before the stream fails
RETRY_PAUSE_SECONDS = 0.5  # first pause before a resubmission (doubles): the controller needs a moment to notice


BUSY = "every replica of the cluster is busy and its queue is full: retry later (the operator can add replicas)"


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

    config: Any  # the replicas' `SAMAudioConfig` (sizes: latent width, position table)
    sample_rate: int
    hop_length: int
    vision: bool  # loaded with the vision encoder: streams may send a masked video


class ModelView:
    """The front door's stand-in for the replicas' model: its sizes, and text encoded by a replica.

    The streaming engine reads sizes from its model (rate, hop, latent width, position table) and encodes each
    stream's description once; with the cluster backend the model lives on the replicas, so this view answers
    from their `ReplicaInfo` and sends `encode_text` to one of them. It runs no model work itself.
    """

    device = "cpu"  # where the front door keeps a stream's tensors; replicas move them to their device

    def __init__(self, info: ReplicaInfo, handle: Any):
        self.config = info.config
        self.sample_rate = info.sample_rate
        self.hop_length = info.hop_length
        self.vision_encoder = True if info.vision else None  # the servicer asks only whether there is one
        self._handle = handle

    def encode_text(self, descriptions: list[str]) -> Any:
        return self._handle.encode_text.remote(list(descriptions)).result()


class SeparationReplica:
    """One replica: loads the model once on its device and runs batched windows. Deployed by `deploy`."""

    def __init__(self, spec: ReplicaSpec, app: str = APP_NAME):
        import torch
        from ray import serve

        from samaudio.model import catalog

        if spec.threads is not None:
            torch.set_num_threads(spec.threads)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.model, self.processor = catalog.load(spec.model, dtype=spec.dtype, vision=spec.vision)
        self._separate_batch.set_max_batch_size(spec.windows_per_batch)
        self._stats = stats_actor(app)
        logger.info("replica %s ready with %s on %s", self.replica_id, spec.model, self.model.device)

    def describe(self) -> ReplicaInfo:
        return ReplicaInfo(
            config=self.model.config,
            sample_rate=int(self.model.sample_rate),
            hop_length=int(self.model.hop_length),
            vision=getattr(self.model, "vision_encoder", None) is not None,
        )

    async def encode_text(self, descriptions: list[str]) -> Any:
        """((B, S_t, Dt) features, (B, S_t) mask) on the CPU, for the front door to put in its jobs."""
        import torch

        def encode() -> Any:
            with torch.inference_mode():
                features, mask = self.model.encode_text(descriptions)
            return features.cpu(), mask.cpu()

        return await asyncio.to_thread(encode)

    async def separate(self, job: Any) -> tuple[str, Any]:
        """One window: (this replica's id, its `WindowStems`). Batched with other windows by `_separate_batch`.

        A caller that cancels (its stream went away) sets the window's stop flag: the model call it shares stops
        at its next solver step once every window in it is stopped, and runs on for the others otherwise.
        """
        stop = threading.Event()
        try:
            return await self._separate_batch(dataclasses.replace(job, should_stop=stop.is_set))
        except asyncio.CancelledError:
            stop.set()
            raise

    async def _separate_batch(self, jobs: list[Any]) -> list[tuple[str, Any]]:
        from samaudio.errors import StoppedError
        from samaudio.streaming import separate_windows

        # one batch at a time per replica (serve.batch's default): the model is used by one thread at a time
        self._stats.count.remote(self.replica_id, "started", len(jobs))
        try:
            stems = await asyncio.to_thread(separate_windows, self.model, self.processor, jobs)
        except StoppedError:
            self._stats.count.remote(self.replica_id, "stopped", len(jobs))
            raise
        self._stats.count.remote(self.replica_id, "run", len(jobs))
        return [(self.replica_id, s) for s in stems]


class ClusterStats:
    """Windows started, run (to the end) and stopped (at a solver step) per replica, kept by one small actor for
    logs, tests and the bench."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}

    def count(self, replica: str, kind: str, n: int) -> None:
        row = self.counts.setdefault(replica, {"started": 0, "run": 0, "stopped": 0})
        row[kind] += n

    def snapshot(self) -> dict[str, dict[str, int]]:
        return self.counts


def stats_actor(app: str) -> Any:
    """The `ClusterStats` actor of application `app` (created on first use, shared by its replicas)."""
    import ray

    return ray.remote(num_cpus=0)(ClusterStats).options(
        name=f"{app}-stats", namespace="samaudio", get_if_exists=True
    ).remote()


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
    cls._separate_batch = serve.batch(max_batch_size=spec.windows_per_batch, batch_wait_timeout_s=0.005)(
        SeparationReplica._separate_batch
    )
    deployment = serve.deployment(
        cls,
        name=DEPLOYMENT_NAME,
        num_replicas=replicas,
        ray_actor_options={"num_gpus": gpus_per_replica, "num_cpus": 0},
        max_ongoing_requests=max_ongoing_requests,
        max_queued_requests=max_queued_requests,
    )
    stats_actor(name)
    return serve.run(deployment.bind(spec, name), name=name, route_prefix=None)


class RayWorker:
    """A `WindowWorker` that runs windows on the deployment: one request per window, results in order."""

    def __init__(
        self, handle: Any, *, app: str = APP_NAME, retries: int = RETRIES, retry_pause: float = RETRY_PAUSE_SECONDS
    ):
        self._handle = handle
        self._stats = stats_actor(app)
        self._retries = retries
        self._retry_pause = retry_pause
        self._closed = False
        self._lock = threading.Lock()
        self.windows_by_replica: dict[str, int] = {}  # for logs, tests and the bench
        self.resubmitted = 0  # windows sent again after their replica died
        self._waiters = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="samaudio-ray")
        self.model = ModelView(handle.describe.remote().result(), handle)

    def replica_stats(self) -> dict[str, dict[str, int]]:
        """{replica id: {"started": windows, "run": windows, "stopped": windows}} as the replicas reported them."""
        import ray

        return ray.get(self._stats.snapshot.remote())

    def processor(self) -> Any:
        """The processor the front door's streams use (the replicas build their own from the same sizes)."""
        from samaudio.processor import SAMAudioProcessor

        return SAMAudioProcessor(self.model.hop_length, self.model.sample_rate)

    def submit(self, jobs: Sequence[Any]) -> concurrent.futures.Future:
        if self._closed:
            raise WorkerClosedError("the cluster worker is shut down; no more windows are run")
        future: concurrent.futures.Future = concurrent.futures.Future()
        if not jobs:
            future.set_result([])
            return future
        # A stream's text is encoded once (by a replica) and travels in every window's job, so no replica encodes
        # it again; `should_stop` is the front door's: a cancelled stream cancels its requests instead. `on_step`
        # (progress inside a window) is a callback into the front door's stream and stays there: on this backend
        # progress moves per window.
        jobs = [dataclasses.replace(job, should_stop=None, on_step=None) for job in jobs]
        for job in jobs:
            job.text.features(self.model)
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
            raise ClusterBusyError(BUSY) from e

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
        from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError, RequestCancelledError

        pause = self._retry_pause
        for attempt in range(self._retries + 1):
            try:
                replica, stems = response.result()
            except RequestCancelledError:
                raise concurrent.futures.CancelledError("the stream was cancelled") from None
            except BackPressureError as e:  # Serve may refuse when the request is assigned, not when sent
                raise ClusterBusyError(BUSY) from e
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


def connect(
    spec: ReplicaSpec, *, address: str = "auto", replicas: int | str = "auto", gpus_per_replica: float = 1.0
) -> RayWorker:
    """Join the Ray cluster at `address` as a driver, deploy `replicas` replicas of `spec` (auto: one per GPU
    of the cluster) and return the worker the front door uses."""
    try:
        import ray
    except ImportError as e:
        raise ClusterUnavailableError(
            'the ray backend needs Ray Serve on the front door and every GPU box: pip install "samaudio[cluster]"'
        ) from e
    if not ray.is_initialized():
        try:
            ray.init(address=address, logging_level="WARNING")
        except ConnectionError as e:
            raise ClusterUnavailableError(
                f"no Ray cluster at {address!r} ({e}): start one with `ray start --head` on this box and "
                "`ray start --address HEAD:6379` on each GPU box"
            ) from e
    if replicas == "auto":
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus < gpus_per_replica:
            raise ClusterUnavailableError(
                f"the Ray cluster has {gpus:g} GPUs, so 'auto' makes no replica: give a number of replicas"
            )
        replicas = int(gpus // gpus_per_replica)
    logger.info("deploying %d replica(s) of %s", replicas, spec.model)
    return RayWorker(deploy(spec, replicas=int(replicas), gpus_per_replica=gpus_per_replica))
