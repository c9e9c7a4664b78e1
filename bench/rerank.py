"""Re-ranking costs: K candidates per window relative to one, and peak memory with a ranker loaded vs without.

rerank_cost_ratio: wall time of `separate(reranking_candidates=K)` over `separate()` for one mono window at a
preset size with random weights (`--quick`: 4 midpoint steps, else the default 16), no ranker (generation only: the B*K
rows go through the ODE and the decoder in one batch, the codec encode and the text encode run once). The two
calls alternate, `repeats` pairs; the figure is the median of the per-pair ratios, with their range.

rerank_peak_rss: each configuration runs in a fresh process (`python -m bench.rerank --child ...`) that builds
the preset model, optionally a ranker at its released size with random weights, separates one window with K
candidates (scoring them when a ranker is loaded), and reports its peak resident set size. Rankers: "clap"
(LAION-CLAP HTSAT-tiny + RoBERTa-base, 630k-best.pt's architecture), "imagebind" (ImageBind-huge audio and vision
towers, scoring against a stand-in masked video). The judge is left out: its released sizes are not known here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import MODEL_RATE, bench_signal, side_by_side
from bench.memory import current_rss_bytes, peak_rss_bytes

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def _model_and_batch(preset: str, seconds: float, device: str, video: bool = False):
    import torch

    from samaudio import SAMAudio, SAMAudioProcessor
    from samaudio.model.config import get_preset

    torch.manual_seed(0)
    model = SAMAudio.from_config(get_preset(preset).build_config(), random_text_encoder=True).to(device)
    processor = SAMAudioProcessor(model.hop_length, model.sample_rate)
    audio = torch.from_numpy(bench_signal(0, round(seconds * MODEL_RATE), 1).T.copy())  # (1, samples) mono
    batch = processor(descriptions=["a chirp"], audios=[audio])
    return model, batch


def measure_rerank_cost(
    preset: str = "sam-audio-small",
    seconds: float = 2.0,
    candidates: int = 4,
    repeats: int = 2,
    device: str = "cpu",
    steps: int | None = None,
) -> dict[str, Any]:
    """{"rerank_cost_ratio": median wall(K) / wall(1), ...} for one window, generation only (no ranker)."""
    import torch

    from samaudio.model.model import midpoint_ode_opt

    model, batch = _model_and_batch(preset, seconds, device)
    ode_opt = None if steps is None else midpoint_ode_opt(steps)
    times = side_by_side(
        {
            "one": lambda: model.separate(batch, ode_opt=ode_opt),
            "many": lambda: model.separate(batch, ode_opt=ode_opt, reranking_candidates=candidates),
        },
        repeats=repeats,
        device=device,
        warmup=0,
    )
    ratios = [m / o for m, o in zip(times["many"], times["one"])]
    del model
    torch.cuda.empty_cache() if device.startswith("cuda") else None
    return {
        "rerank_cost_ratio": statistics.median(ratios),
        "rerank_cost_ratio_range": [min(ratios), max(ratios)],
        "rerank_candidates": candidates,
        "rerank_wall_one_seconds": statistics.median(times["one"]),
        "rerank_wall_many_seconds": statistics.median(times["many"]),
        "rerank_window_seconds": seconds,
        "rerank_preset": f"{preset} (random weights), {steps or 16} midpoint steps ({2 * (steps or 16)} "
        "evaluations), no ranker",
    }


def _word_tokenizer():
    """A stand-in RoBERTa-style tokenizer (special tokens only): the memory run needs token ids, not meaning."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


def _random_ranker(kind: str):
    import torch

    torch.manual_seed(1)
    if kind == "clap":
        from samaudio.ranking.clap import CLAP, ClapConfig, ClapRanker

        return ClapRanker(model=CLAP(ClapConfig()), tokenizer=_word_tokenizer())
    if kind == "imagebind":
        from samaudio.ranking.imagebind import ImageBindAV, ImageBindConfig, ImageBindRanker

        ranker = ImageBindRanker.__new__(ImageBindRanker)
        torch.nn.Module.__init__(ranker)
        ranker.model = ImageBindAV(ImageBindConfig()).eval()
        return ranker
    raise ValueError(f"unknown ranker {kind!r}")


def memory_child(preset: str, seconds: float, candidates: int, steps: int, ranker: str, device: str) -> dict:
    import torch

    from samaudio.model.model import midpoint_ode_opt

    model, batch = _model_and_batch(preset, seconds, device)
    rss_model = current_rss_bytes()
    if ranker != "none":
        setattr(model, "visual_ranker" if ranker == "imagebind" else "text_ranker", _random_ranker(ranker).to(device))
    rss_ready = current_rss_bytes()
    result = model.separate(batch, ode_opt=midpoint_ode_opt(steps), reranking_candidates=candidates)
    if ranker == "imagebind":
        # the preset has no vision encoder, so the batch carries no video: score K targets against a stand-in
        # masked video (25 fps, 224 x 320) through the same selection separate() uses
        video = torch.randint(0, 256, (round(seconds * 25), 3, 224, 320), dtype=torch.uint8)
        targets = [torch.stack([result.target[0]] * candidates)]
        model.choose_candidates(targets, mixtures=[batch.audios[0]], descriptions=["a chirp"], masked_videos=[video])
    out = {"peak_rss_bytes": peak_rss_bytes(), "rss_model_bytes": rss_model, "rss_ready_bytes": rss_ready}
    if device.startswith("cuda"):
        out["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    return out


def measure_ranker_memory(
    preset: str = "sam-audio-small",
    seconds: float = 2.0,
    candidates: int = 2,
    steps: int = 2,
    rankers: tuple[str, ...] = ("clap",),
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Peak RSS of a process separating one window with K candidates: without a ranker, and with each of
    `rankers` loaded (one fresh process per configuration, run one after the other)."""
    runs = {}
    for ranker in ("none", *rankers):
        runs[ranker] = _child(preset, seconds, candidates, steps, ranker, device, threads)
    base = runs["none"]["peak_rss_bytes"]
    result: dict[str, Any] = {
        "rerank_peak_rss_without_ranker_mib": base / MIB,
        "rerank_memory_settings": f"{preset} (random weights), {seconds:g} s mono window, K={candidates}, "
        f"{steps} solver steps; rankers at released sizes, random weights",
    }
    for ranker in rankers:
        peak = runs[ranker]["peak_rss_bytes"]
        result[f"rerank_peak_rss_with_{ranker}_mib"] = peak / MIB
        result[f"rerank_peak_rss_ratio_{ranker}_vs_none"] = peak / base
        result[f"rerank_ranker_resident_{ranker}_mib"] = (
            runs[ranker]["rss_ready_bytes"] - runs[ranker]["rss_model_bytes"]
        ) / MIB
    return result


def _child(preset, seconds, candidates, steps, ranker, device, threads) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "bench.rerank", "--preset", preset, "--seconds", str(seconds), "--candidates",
           str(candidates), "--steps", str(steps), "--ranker", ranker, "--device", device]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"rerank memory child ({ranker}) failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one re-ranking memory run (a bench child process)")
    parser.add_argument("--preset", default="sam-audio-small")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--candidates", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--ranker", default="none", choices=["none", "clap", "imagebind"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(json.dumps(memory_child(args.preset, args.seconds, args.candidates, args.steps, args.ranker, args.device)))


if __name__ == "__main__":
    main()
