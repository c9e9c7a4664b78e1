"""The Ray Serve backend: windows separated on replicas equal windows separated in-process.

One real local Ray cluster with two logical GPUs serves the golden model on two replicas for the whole module
(starting it is the slow part). The fault test kills a replica and runs last.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the cluster backend needs the [cluster] extra")

from server_fixtures import make_audio, pieces  # noqa: E402

REPLICAS = 2
CHUNK, OVERLAP = 1.0, 0.4
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


def _stream(model, processor, worker, audio, rate, *, push=4096, description="a chirp", **kw):
    from samaudio.streaming import StreamingSeparator

    sep = StreamingSeparator(
        model, processor, description, sample_rate=rate, channels=audio.shape[1], chunk_seconds=CHUNK,
        overlap_seconds=OVERLAP, ode_opt={"method": "midpoint", "options": {"step_size": 0.5}}, worker=worker,
        max_batch=4, **kw,
    )
    blocks = [b for p in pieces(audio, push) for b in sep.push(p)] + sep.finish()
    return np.concatenate([b.target for b in blocks]), np.concatenate([b.residual for b in blocks])


def test_windows_on_replicas_equal_windows_in_process(golden_model, golden_processor, worker):
    audio = make_audio(3.3, 44100, 2, seed=3)
    want = _stream(golden_model, golden_processor, None, audio, 44100)
    got = _stream(golden_model, golden_processor, worker, audio, 44100, push=3001)
    np.testing.assert_allclose(got[0], want[0], atol=TOL, rtol=0)
    np.testing.assert_allclose(got[1], want[1], atol=TOL, rtol=0)


def test_one_streams_windows_spread_over_both_replicas(golden_model, golden_processor, worker):
    audio = make_audio(6.0, 48000, 1, seed=4)
    _stream(golden_model, golden_processor, worker, audio, 48000, push=48000 * 6)
    assert len(worker.windows_by_replica) == REPLICAS, worker.windows_by_replica
    assert sum(worker.windows_by_replica.values()) == 10  # ceil((6 - 1) / 0.6) + 1 windows, once each


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
    from ray import serve

    audio = make_audio(6.0, 48000, 1, seed=5)
    want = _stream(golden_model, golden_processor, None, audio, 48000)

    import threading

    def kill_one_replica_soon():
        time.sleep(0.3)
        names = [a for a in ray.util.list_named_actors(all_namespaces=True) if "SeparationReplica" in a["name"]]
        ray.kill(ray.get_actor(names[0]["name"], namespace=names[0]["namespace"]), no_restart=True)

    killer = threading.Thread(target=kill_one_replica_soon)
    killer.start()
    got = _stream(golden_model, golden_processor, worker, audio, 48000, push=48000 * 6)
    killer.join()
    np.testing.assert_allclose(got[0], want[0], atol=TOL, rtol=0)
    np.testing.assert_allclose(got[1], want[1], atol=TOL, rtol=0)
    assert worker.resubmitted >= 1
    serve.status()
