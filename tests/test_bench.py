"""The benchmarks still run: each measurement, at a minimal size, returns its documented keys with finite values.

No figure is asserted (benchmarks are measured with `python -m bench`, never in tests): these only keep the
code paths from rotting. Child processes (benchmark servers, memory runs) are real, on loopback.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `bench` is a top-level folder of the repository, not an installed package

torch = pytest.importorskip("torch")


def assert_finite_keys(figures: dict, keys: list[str]) -> None:
    missing = [k for k in keys if k not in figures]
    assert not missing, f"missing keys {missing} in {sorted(figures)}"
    for k in keys:
        values = figures[k].values() if isinstance(figures[k], dict) else [figures[k]]
        assert values and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values), (k, figures[k])


def test_dit_efficiency_reports_flops_rates_and_ratio():
    from bench.dit import measure_dit_efficiency

    figures = measure_dit_efficiency("demo-tiny", B=1, T=7, S=3, repeats=1, min_matmul_seconds=0.001)
    assert_finite_keys(
        figures, ["dit_matmul_efficiency", "dit_gflops_per_second", "matmul_gflops_per_second", "dit_forward_seconds"]
    )


def test_dit_flops_count_every_matmul_of_a_layer():
    from bench.dit import DiTShape, dit_flops

    one = DiTShape(B=1, T=5, S=3, D=8, L=1, Fh=16, F=4, Co=6, swiglu=True, context_swiglu=True, timestep_swiglu=True)
    two = DiTShape(**{**one.__dict__, "L": 2})
    B, T, S, D, Fh = 1, 5, 3, 8, 16
    layer = 2 * (6 * T * D * D + 2 * S * D * D + 2 * T * T * D + 2 * T * S * D + 3 * T * D * Fh)
    assert dit_flops(two) - dit_flops(one) == layer * B


def test_peak_rss_reports_both_lengths_and_their_ratio():
    from bench.memory import measure_peak_rss

    figures = measure_peak_rss(0.5, 1.5, stand_in=True, inline=True)
    assert_finite_keys(figures, ["peak_rss_ratio_long_vs_short", "peak_rss_short_mib", "peak_rss_long_mib"])


def test_transport_reports_the_full_path_the_wire_and_the_engine():
    from bench.transport import measure_transport

    figures = measure_transport(seconds=1.0, repeats=1, inline=True)
    assert_finite_keys(
        figures, ["transport_realtime_factor", "transport_echo_realtime_factor", "engine_realtime_factor"]
    )


def test_serving_reports_overhead_and_first_audio_latency():
    from bench.overhead import measure_serving

    figures = measure_serving(
        overhead_seconds=0.5, chunk_seconds=0.2, overlap_seconds=0.04, repeats=1, latency_repeats=1, solver_steps=1,
        inline=True,
    )
    assert_finite_keys(figures, ["grpc_overhead_ratio", "first_audio_latency_ratio", "grpc_stems_max_abs_diff"])


def test_separate_rtf_is_given_per_preset():
    from bench.rtf import measure_separate_rtf

    figures = measure_separate_rtf(["demo-tiny"], seconds=0.1, repeats=1, warmup=False)
    assert_finite_keys(figures, ["separate_rtf"])
    assert list(figures["separate_rtf"]) == ["demo-tiny"]


def test_rerank_cost_and_memory_are_given():
    from bench.rerank import measure_ranker_memory, measure_rerank_cost

    figures = measure_rerank_cost("demo-tiny", seconds=0.1, candidates=2, repeats=1, steps=1)
    assert_finite_keys(figures, ["rerank_cost_ratio", "rerank_wall_one_seconds", "rerank_wall_many_seconds"])
    figures = measure_ranker_memory("demo-tiny", seconds=0.1, candidates=2, steps=1, rankers=())
    assert_finite_keys(figures, ["rerank_peak_rss_without_ranker_mib"])


def test_the_span_gate_figures_are_given():
    from bench.quality import measure_gate_effect

    figures = measure_gate_effect("demo-tiny", seconds=0.3, chunk=0.16, overlap=0.04, steps=1, repeats=1)
    assert figures["gate_windows_closed"] == figures["gate_windows"] > 1
    assert figures["gate_target_rms_dbfs_with_gate"] is None  # exact silence where the gate closes (null in JSON)
    assert_finite_keys(figures, ["gate_target_rms_dbfs_without_gate", "gate_wall_with_gate_seconds"])


def test_a_benchmark_server_child_process_serves_and_stops():
    import grpc

    from bench.serve import ServerProcess

    server = ServerProcess(echo=True)
    with server as port:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
    assert server.proc is None


def test_the_table_marks_figures_against_their_targets():
    from bench.__main__ import table, verdict

    assert verdict("grpc_overhead_ratio", 1.2).endswith("SHORT")
    assert verdict("transport_realtime_factor", 400.0).endswith("ok")
    figures = {"grpc_overhead_ratio": 1.01, "separate_rtf": {"demo-tiny": 2.0}, "machine": {"cpu": "x"}}
    assert "grpc_overhead_ratio" in table(figures)


def _strict(constant: str):
    raise AssertionError(f"{constant} in the JSON: not plain JSON (no NaN or Infinity)")


def test_python_m_bench_writes_plain_json_of_the_figures_the_machine_and_the_settings(tmp_path, monkeypatch):
    import bench.__main__ as bench_main
    from bench.dit import measure_dit_efficiency

    measured: dict = {}

    def tiny_dit(settings):  # the real measurement at a test size
        measured.update(measure_dit_efficiency("demo-tiny", B=1, T=7, S=3, repeats=1, min_matmul_seconds=0.001))
        return measured

    monkeypatch.setitem(bench_main.MEASUREMENTS, "dit", tiny_dit)
    out = tmp_path / "figures.json"
    assert bench_main.main(["--quick", "--only", "dit", "--out", str(out)]) == 0
    written = json.loads(out.read_text(), parse_constant=_strict)
    assert {k: written[k] for k in measured} == measured
    assert written["settings"]["quick"] is True and written["settings"]["dit_preset"] == "sam-audio-small"
    assert {"cpu", "torch", "load_average_at_end"} <= set(written["machine"])
    assert written["elapsed_seconds"] > 0 and "errors" not in written


def test_stages_report_every_variant_and_stage_with_fidelity():
    from bench.stages import STAGES, VARIANTS, measure_stages

    figures = measure_stages("demo-tiny", seconds=0.3, steps=1, pairs=1, step_tiers=[1])
    assert set(figures["stages_seconds"]) == set(VARIANTS)
    for v in VARIANTS:
        assert set(figures["stages_seconds"][v]) == set(STAGES)
        assert all(math.isfinite(x) for st in STAGES for x in figures["stages_seconds"][v][st].values())
    diffs = figures["stages_max_abs_diff_vs_before"]
    assert diffs["after"] == {"target": 0.0, "residual": 0.0}  # the shortcuts change no output
    assert diffs["target"]["target"] < 1e-6 and "residual" not in diffs["target"]
    assert figures["stages_folded_weight_mib"] > 0


def test_stream_stages_report_every_variant_with_fidelity():
    from bench.stages import STREAM_VARIANTS, measure_stream_stages

    figures = measure_stream_stages(
        "demo-tiny", seconds=0.6, steps=1, pairs=1, variants=STREAM_VARIANTS, channels=2, chunk_seconds=0.4,
        overlap_seconds=0.08,
    )  # fmt: skip
    assert_finite_keys(figures, ["stream_realtime_factor", "stream_peak_mib"])
    assert set(figures["stream_stages_seconds"]) == set(figures["stream_setup"]["variants"]) >= {
        "before", "after", "target", "null_sum"}  # fmt: skip
    diffs = figures["stream_max_abs_diff_vs_before"]
    assert diffs["after"] == {"target": 0.0, "residual": 0.0}  # the shortcuts change no output
    assert diffs["target"]["target"] < 1e-6 and diffs["null_sum"]["target"] < 1e-6


def test_separation_reports_held_out_si_sdri_the_codec_ceiling_and_streaming_figures():
    pytest.importorskip("fast_bss_eval")
    from bench.separation import measure_separation

    figures = measure_separation(examples=3, seconds=1.0, stream_seconds=12.0, steps=1, classes=["a kick drum"])
    assert_finite_keys(
        figures,
        [
            "quality_si_sdri_median_db",
            "quality_si_sdri_per_class_db",
            "codec_si_sdr_median_db",
            "stream_one_pass_si_sdr_all_db",
            "stream_windows_10s_si_sdr_seam_db",
            "stream_windows_10s_si_sdr_elsewhere_db",
            "stream_windows_2s_si_sdr_seam_db",
            "stream_windows_2s_absent_target_energy_db",
        ],
    )


def test_daw_reports_the_short_selection_and_cancel_to_freed():
    from bench.daw import _cancel_child, measure_short_selection

    figures = measure_short_selection(repeats=1, seconds=0.3, chunk=0.6)
    assert_finite_keys(figures, ["short_selection_seconds_full_window", "short_selection_seconds_planned",
                                 "short_selection_speedup"])  # fmt: skip
    assert figures["short_selection_windows"] == [(1, 1)]
    figures = _cancel_child(repeats=1, threads=None, seconds=0.4, chunk=0.6)
    assert_finite_keys(figures, ["cancel_to_freed_seconds", "window_seconds", "shared_cancel_to_freed_seconds"])
    assert figures["shared_cancel_calls_shared"] == "1 of 1"  # A's and B's windows ran in one model call


def test_daw_is_one_of_the_measurements():
    from bench.__main__ import MEASUREMENTS

    assert "daw" in MEASUREMENTS
