"""The streaming quality path (issue 16): K candidates per window, the span gate, and a server's memory with rankers.

stream_candidates_cost_ratio: wall time of a `StreamingSeparator` run with `candidates=K` over the same run with
one candidate, at a preset size with random weights and a random CLAP text ranker at its released size (HTSAT-tiny
+ RoBERTa-base) choosing among the K. The two runs alternate, `repeats` pairs; median of the per-pair ratios and
their range. Per window: the codec encode and the text encode run once, the ODE and the decoder on K rows, the
ranker scores K targets.

gate_*: the same stream with the span gate off and on, with a random PE-A-Frame at a small documented size
(GATE_PREDICTOR: hidden 24/20, 1-2 layers) whose logit bias is set so that no frame is active, i.e. the prompted
sound is absent everywhere: the case of official issue #94. Without the gate the model returns other audio in those
windows; with it the target is exact silence and the window costs no ODE. Reported: the target's RMS in the
windows the gate closes (dBFS, without vs with the gate), the windows gated, and the wall time of each run.

server_peak_rss: a `samaudio-server`-equivalent process (`create_server` on loopback, the same worker and servicer)
per configuration, in a fresh child (`python -m bench.quality --child ...`): the preset model alone, or with the
random CLAP ranker and the small span predictor attached; one stream through gRPC (K = 2 and spans with the parts,
K = 1 without), then its peak resident set size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import MODEL_RATE, bench_signal, report, side_by_side
from bench.memory import current_rss_bytes, peak_rss_bytes

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
# The gate's stand-in predictor: PE-A-Frame's layout at a small size (the released one is not needed to show
# what the gate does once the predictor finds nothing).
GATE_PREDICTOR = dict(
    text_model=dict(
        vocab_size=128, hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        global_attn_every_n_layers=2, local_attention=4, pad_token_id=0,
    ),
    audio_transformer=dict(hidden_size=20, intermediate_size=29, num_hidden_layers=1, num_attention_heads=2),
    output_dim=6,
)


def _model(preset: str, device: str):
    import torch

    from samaudio import SAMAudio, SAMAudioProcessor
    from samaudio.model.config import get_preset

    torch.manual_seed(0)
    model = SAMAudio.from_config(get_preset(preset).build_config(), random_text_encoder=True).to(device)
    return model, SAMAudioProcessor(model.hop_length, model.sample_rate)


def _span_predictor(model, active: bool):
    """A random PE-A-Frame at GATE_PREDICTOR's size whose every frame is active (or none)."""
    import torch

    from samaudio.model.config import PEAudioFrameConfig
    from samaudio.model.span_predictor import PEAudioFrame, PEAudioFrameTransform
    from samaudio.model.text_encoder import _char_tokenizer

    C = model.config.audio_codec.codebook_dim
    config = PEAudioFrameConfig(
        text_model=GATE_PREDICTOR["text_model"],
        audio_model=dict(
            dac_vae_encoder=dict(encoder_hidden_size=2, codebook_dim=2 * C, codebook_size=8),
            audio_transformer=GATE_PREDICTOR["audio_transformer"],
        ),
        nth_text_layer=1,
        output_dim=GATE_PREDICTOR["output_dim"],
    )
    torch.manual_seed(2)
    predictor = PEAudioFrame(config).eval().to(model.device)
    with torch.no_grad():
        predictor.logit_scale.fill_(0.0)  # probabilities = sigmoid(bias): the sound everywhere, or nowhere
        predictor.logit_bias.fill_(10.0 if active else -10.0)
    return predictor, PEAudioFrameTransform(_char_tokenizer())


def _with_parts(model, *, ranker: bool, spans: bool, active: bool = False):
    """`model` with a random CLAP text ranker and/or the small span predictor attached (its own weights kept)."""
    if spans:
        model.span_predictor, model.span_predictor_transform = _span_predictor(model, active)
    if ranker:
        from bench.rerank import _random_ranker

        model.text_ranker = _random_ranker("clap").to(model.device)
    return model


def _stream(model, processor, audio: np.ndarray, chunk: float, overlap: float, steps: int, **kwargs):
    from samaudio.model.model import midpoint_ode_opt
    from samaudio.streaming import StreamingSeparator

    sep = StreamingSeparator(
        model, processor, "a chirp", sample_rate=MODEL_RATE, channels=audio.shape[1], chunk_seconds=chunk,
        overlap_seconds=overlap, ode_opt=midpoint_ode_opt(steps), **kwargs,
    )
    blocks = sep.push(audio) + sep.finish()
    return sep, np.concatenate([b.target for b in blocks])


def measure_stream_candidates_cost(
    preset: str = "sam-audio-small",
    seconds: float = 3.0,
    chunk: float = 2.0,
    overlap: float = 0.5,
    candidates: int = 4,
    steps: int = 2,
    repeats: int = 2,
    device: str = "cpu",
) -> dict[str, Any]:
    """{"stream_candidates_cost_ratio": median wall(K) / wall(1), ...}: a mono stream, a random CLAP ranking."""
    model, processor = _model(preset, device)
    _with_parts(model, ranker=True, spans=False)
    audio = bench_signal(0, round(seconds * MODEL_RATE), 1)  # (frames, 1)
    runs: dict[str, Any] = {}

    def run(k: int):
        runs[k] = _stream(model, processor, audio, chunk, overlap, steps, candidates=k)[0]

    times = side_by_side({"one": lambda: run(1), "many": lambda: run(candidates)}, repeats=repeats, device=device)
    ratios = [m / o for m, o in zip(times["many"], times["one"])]
    windows = runs[1].windows_done
    return {
        "stream_candidates_cost_ratio": statistics.median(ratios),
        "stream_candidates_cost_ratio_range": [min(ratios), max(ratios)],
        "stream_candidates": candidates,
        "stream_candidates_wall_per_window_one_seconds": statistics.median(times["one"]) / windows,
        "stream_candidates_wall_per_window_many_seconds": statistics.median(times["many"]) / windows,
        "stream_candidates_settings": f"{preset} (random weights), {seconds:g} s mono stream, {windows} windows of "
        f"{chunk:g} s (overlap {overlap:g} s), {steps} midpoint steps, random CLAP ranker at its released size",
    }


def measure_gate_effect(
    preset: str = "sam-audio-small",
    seconds: float = 3.0,
    chunk: float = 2.0,
    overlap: float = 0.5,
    steps: int = 2,
    repeats: int = 2,
    device: str = "cpu",
) -> dict[str, Any]:
    """Target RMS and wall time with the span gate off vs on, where the predictor finds no activity anywhere."""
    model, processor = _model(preset, device)
    _with_parts(model, ranker=False, spans=True, active=False)
    audio = bench_signal(1, round(seconds * MODEL_RATE), 1)
    out: dict[str, Any] = {}

    def run(gate: bool):
        out[gate] = _stream(model, processor, audio, chunk, overlap, steps, span_gate=gate)

    times = side_by_side({"off": lambda: run(False), "on": lambda: run(True)}, repeats=repeats, device=device)
    (sep_off, target_off), (sep_on, target_on) = out[False], out[True]

    def dbfs(x: np.ndarray) -> float | None:
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
        return 20 * math.log10(rms) if rms > 0 else None  # exact silence: null in the JSON (-inf is not JSON)

    return {
        "gate_windows": sep_on.counters.windows_done,
        "gate_windows_closed": sep_on.counters.windows_gated,
        "gate_target_rms_dbfs_without_gate": dbfs(target_off),
        "gate_target_rms_dbfs_with_gate": dbfs(target_on),  # None: exact silence
        "gate_mix_rms_dbfs": dbfs(audio),
        "gate_wall_without_gate_seconds": statistics.median(times["off"]),
        "gate_wall_with_gate_seconds": statistics.median(times["on"]),
        "gate_settings": f"{preset} (random weights), {seconds:g} s mono stream, windows of {chunk:g} s (overlap "
        f"{overlap:g} s), {steps} midpoint steps; random PE-A-Frame at GATE_PREDICTOR's size, logit bias -10 (no "
        "frame active): every window's gate closes",
    }


# ----------------------------------------------------------------------------------------------------------
# A server's peak memory with the quality parts loaded vs without (one child process each)


def server_child(preset: str, parts: bool, seconds: float, chunk: float, overlap: float, steps: int) -> dict:
    import grpc

    from samaudio.defaults import StreamDefaults
    from samaudio.v1 import separation_pb2 as pb
    from samaudio.v1 import separation_pb2_grpc as pb_grpc
    from samaudio_server.server import create_server

    model, processor = _model(preset, "cpu")
    if parts:
        _with_parts(model, ranker=True, spans=True, active=True)
    rss_loaded = current_rss_bytes()
    defaults = StreamDefaults(chunk_seconds=chunk, overlap_seconds=overlap, solver_steps=steps)
    server, port = create_server("127.0.0.1:0", model=model, processor=processor, model_name=preset, defaults=defaults)
    server.start()
    try:
        audio = bench_signal(2, round(seconds * MODEL_RATE), 1)
        config = pb.SeparationConfig(
            description="a chirp", sample_rate_hertz=MODEL_RATE, channel_count=1,
            sample_format=pb.SAMPLE_FORMAT_FLOAT32_LE,
        )
        if parts:
            config.candidates, config.predict_spans = 2, True
        requests = [pb.SeparateRequest(config=config), pb.SeparateRequest(audio_content=audio.astype("<f4").tobytes())]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            summary = [r.summary for r in pb_grpc.SeparationServiceStub(channel).Separate(iter(requests))][-1]
    finally:
        server.stop(0)
    return {
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_loaded_bytes": rss_loaded,
        "windows": summary.windows,
        "candidates_evaluated": summary.candidates_evaluated,
    }


def measure_server_memory(
    preset: str = "sam-audio-small", seconds: float = 3.0, chunk: float = 2.0, overlap: float = 0.5, steps: int = 2
) -> dict[str, Any]:
    runs = {parts: _server_child(preset, parts, seconds, chunk, overlap, steps) for parts in (False, True)}
    base, full = runs[False]["peak_rss_bytes"], runs[True]["peak_rss_bytes"]
    return {
        "server_peak_rss_without_parts_mib": base / MIB,
        "server_peak_rss_with_parts_mib": full / MIB,
        "server_peak_rss_ratio_parts_vs_none": full / base,
        "server_loaded_rss_without_parts_mib": runs[False]["rss_loaded_bytes"] / MIB,
        "server_loaded_rss_with_parts_mib": runs[True]["rss_loaded_bytes"] / MIB,
        "server_memory_settings": f"{preset} (random weights) served on loopback, one {seconds:g} s mono stream "
        f"({runs[True]['windows']} windows of {chunk:g} s, {steps} steps); with parts: random CLAP text ranker at "
        "its released size and a random PE-A-Frame at GATE_PREDICTOR's size, the stream asking for 2 candidates "
        "and predicted spans",
    }


def _server_child(preset, parts, seconds, chunk, overlap, steps) -> dict:
    env = dict(os.environ)
    paths = (str(ROOT), str(ROOT / "server"), str(ROOT / "clients" / "python"), env.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    cmd = [sys.executable, "-m", "bench.quality", "--child", "--preset", preset, "--seconds", str(seconds),
           "--chunk", str(chunk), "--overlap", str(overlap), "--steps", str(steps)] + (["--parts"] if parts else [])
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        why = f"exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        raise RuntimeError(f"server memory child (parts={parts}) failed ({why}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the quality-path benchmarks, or one server memory child")
    parser.add_argument("--child", action="store_true", help="run one server memory configuration")
    parser.add_argument("--parts", action="store_true")
    parser.add_argument("--preset", default="sam-audio-small")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--chunk", type=float, default=2.0)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(server_child(args.preset, args.parts, args.seconds, args.chunk, args.overlap, args.steps)))
        return
    common = dict(preset=args.preset, seconds=args.seconds, chunk=args.chunk, overlap=args.overlap, steps=args.steps)
    figures = measure_stream_candidates_cost(candidates=args.candidates, repeats=args.repeats, **common)
    figures.update(measure_gate_effect(repeats=args.repeats, **common))
    figures.update(measure_server_memory(**common))
    report(figures, args.out)


if __name__ == "__main__":
    main()
