"""The Ray Serve backend: windows separated on replicas equal windows separated in-process.

One real local Ray cluster with two logical GPUs serves the golden model on two replicas for the whole module
(starting it is the slow part). The fault test kills a replica and runs last.
"""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the cluster backend needs the [cluster] extra")

from server_fixtures import (  # noqa: E402, F401 - golden_server is a fixture
    config,
    golden_server,
    make_audio,
    pieces,
    separate,
    start_server,
    stream,
    to_bytes,
    wait_until,
)

REPLICAS = 2
TOL = 1e-6  # windows batched with other windows on a replica: kernels may round differently in the last bit


@pytest.fixture(scope="module")
def cluster(golden_dir):
    """A local Ray cluster with the golden model on two replicas of one logical GPU each (a third GPU is left for
    the bench test's quarter-GPU replicas)."""
    from ray import serve

    from samaudio_server.cluster import ReplicaSpec, deploy

    ray.init(num_cpus=2, num_gpus=REPLICAS + 1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        handle = deploy(ReplicaSpec(model=str(golden_dir), windows_per_batch=4, threads=1), replicas=REPLICAS)
        yield handle
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture()
def worker(cluster):
    from samaudio_server.cluster import RayWorker

    w = RayWorker(cluster, retry_pause=0.2)
    yield w
    w.close()


@pytest.fixture(scope="module")
def ray_server(cluster):
    """(server, port, worker): the front door with the cluster backend, on loopback."""
    from samaudio_server.cluster import RayWorker

    worker = RayWorker(cluster, retry_pause=0.2)
    server, port = start_server(worker.model, worker.processor(), worker=worker)
    yield server, port, worker
    server.stop(0)


def _stub(port: int):
    import grpc

    from samaudio.v1 import separation_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, pb_grpc.SeparationServiceStub(channel)


def test_windows_on_replicas_equal_windows_in_process(golden_model, golden_processor, worker):
    audio = make_audio(3.3, 44100, 2, seed=3)
    want = stream(golden_model, golden_processor, audio, 44100, push=4096)
    got = stream(golden_model, golden_processor, audio, 44100, worker=worker, push=3001)
    np.testing.assert_allclose(got[0], want[0], atol=TOL, rtol=0)
    np.testing.assert_allclose(got[1], want[1], atol=TOL, rtol=0)


def test_one_streams_windows_spread_over_both_replicas(golden_model, golden_processor, worker):
    audio = make_audio(6.0, 48000, 1, seed=4)
    stream(golden_model, golden_processor, audio, 48000, worker=worker, push=48000 * 6)
    assert len(worker.windows_by_replica) == REPLICAS, worker.windows_by_replica
    assert sum(worker.windows_by_replica.values()) == 10  # ceil((6 - 1) / 0.6) + 1 windows, once each


def test_stems_through_the_ray_backend_equal_the_local_backend(ray_server, golden_server):
    _, ray_port, _ = ray_server
    _, local_port = golden_server
    cfg = config(sample_rate=44100, channels=2, description="a chirp", anchors=[(1, 0.3, 1.1)], seed=7)
    sends = pieces(make_audio(2.7, 44100, 2, seed=8), 5000)
    results = []
    for port in (ray_port, local_port):
        channel, stub = _stub(port)
        with channel:
            results.append(separate(stub, cfg, sends))
    got, want = results
    assert got.summary.windows == want.summary.windows
    np.testing.assert_allclose(got.target, want.target, atol=TOL, rtol=0)
    np.testing.assert_allclose(got.residual, want.residual, atol=TOL, rtol=0)


def _total(stats: dict, kind: str) -> int:
    return sum(row[kind] for row in stats.values())


def _wait_for(worker, kind: str, above: int) -> int:
    """The replicas' count of `kind` once it passes `above` (their counters live in the replica processes)."""
    wait_until(lambda: _total(worker.replica_stats(), kind) > above, interval=0.05)
    return _total(worker.replica_stats(), kind)


def test_a_cancelled_stream_stops_its_windows_on_the_replicas(ray_server):
    """Long windows (8 s, 64 steps): the client cancels once one runs; the replica stops it at a solver step."""
    import grpc

    _, port, worker = ray_server
    before = worker.replica_stats()
    channel, stub = _stub(port)
    with channel:
        cfg = config(chunk_seconds=8.0, overlap_seconds=1.0, solver_steps=64)
        call = stub.Separate(iter([pb_config_request(cfg), audio_request(cfg, make_audio(12.0, 48000, 1, seed=9))]))
        next(call)  # accepted: the windows are on their way
        assert _wait_for(worker, "started", _total(before, "started")) > _total(before, "started")
        call.cancel()
        with pytest.raises(grpc.RpcError):
            list(call)
    stopped = _wait_for(worker, "stopped", _total(before, "stopped"))
    assert stopped > _total(before, "stopped"), (before, worker.replica_stats())


def test_drain_waits_for_windows_in_flight_on_the_replicas(cluster, golden_model, golden_processor):
    from samaudio_server.cluster import RayWorker

    worker = RayWorker(cluster, retry_pause=0.2)
    server, port = start_server(worker.model, worker.processor(), worker=worker)
    cfg = config(seed=3)
    audio = make_audio(3.0, 48000, 1, seed=10)
    channel, stub = _stub(port)
    with channel:
        call = stub.Separate(iter([pb_config_request(cfg), audio_request(cfg, audio)]))
        next(call)  # accepted: the stream runs
        drained = []
        import threading

        drainer = threading.Thread(target=lambda: drained.append(server.drain(60)))
        drainer.start()
        responses = list(call)
        drainer.join()
    assert drained == [True]
    assert responses[-1].WhichOneof("streaming_response") == "summary"
    assert responses[-1].summary.frames_out == len(audio)


def pb_config_request(cfg):
    from samaudio.v1 import separation_pb2 as pb

    return pb.SeparateRequest(config=cfg)


def audio_request(cfg, audio):
    from samaudio.v1 import separation_pb2 as pb

    return pb.SeparateRequest(audio_content=to_bytes(audio, cfg.sample_format))


def test_a_saturated_cluster_refuses_windows_as_busy(cluster, golden_dir, golden_model, golden_processor):
    """One replica taking one window with a queue of one: a stream handing it eight windows at once is refused."""
    from ray import serve

    from samaudio_server.cluster import RayWorker, ReplicaSpec, deploy
    from samaudio_server.errors import ClusterBusyError, status_code

    handle = deploy(
        ReplicaSpec(model=str(golden_dir), threads=1), replicas=1, gpus_per_replica=0.25, max_ongoing_requests=1,
        max_queued_requests=1, name="tight",
    )
    worker = RayWorker(handle, app="tight")
    audio = make_audio(5.0, 48000, 1, seed=11)
    try:
        with pytest.raises(ClusterBusyError, match="busy") as info:
            stream(golden_model, golden_processor, audio, 48000, worker=worker, push=len(audio))
        assert status_code(info.value).name == "RESOURCE_EXHAUSTED"
    finally:
        worker.close()
        serve.delete("tight")


def test_the_cluster_bench_reports_rates_speedup_and_overhead(cluster):
    import sys

    from test_bench import ROOT, assert_finite_keys

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.cluster import measure_cluster

    figures = measure_cluster(seconds=3.0, chunk_seconds=1.0, overlap_seconds=0.4, repeats=1, gpus_per_replica=0.25)
    assert_finite_keys(
        figures, ["cluster_windows_per_second", "cluster_speedup_2_vs_1", "cluster_overhead_ms_per_window"]
    )
    assert set(figures["cluster_windows_per_second"]) == {"local", "ray_1", "ray_2"}
    assert figures["cluster_windows_per_stream"] == 5


def test_a_replica_killed_mid_stream_loses_nothing(golden_model, golden_processor, worker):
    """The replica that is running windows (its started count ahead of its finished count) is killed: they are
    sent again to the survivor and the stems do not change."""
    import threading

    audio = make_audio(6.0, 48000, 1, seed=5)
    want = stream(golden_model, golden_processor, audio, 48000, push=4096, steps=64)
    killed: list[str] = []

    def killed_a_busy_replica() -> bool:
        for replica, row in worker.replica_stats().items():
            if row["started"] > row["run"] + row["stopped"]:  # windows of this replica are in flight
                for actor in ray.util.list_named_actors(all_namespaces=True):
                    if "SeparationReplica" in actor["name"] and actor["name"].endswith(replica):
                        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
                        killed.append(replica)
                        return True
        return False

    killer = threading.Thread(target=wait_until, args=(killed_a_busy_replica,))
    killer.start()
    got = stream(golden_model, golden_processor, audio, 48000, worker=worker, push=48000 * 6, steps=64)
    killer.join()
    assert killed, "no replica was seen running a window"
    np.testing.assert_allclose(got[0], want[0], atol=TOL, rtol=0)
    np.testing.assert_allclose(got[1], want[1], atol=TOL, rtol=0)
    assert worker.resubmitted >= 1
