"""Evaluation metrics, each loaded only when asked for (official eval/metrics/*.py), plus SI-SDR / SDR.

Every metric maps a list of separated items to per-item columns with the official names:

| metric       | columns                                                          | needs                              |
| ------------ | ---------------------------------------------------------------- | ---------------------------------- |
| `judge`      | JudgeOverall, JudgeFaithfulness, JudgeRecall, JudgePrecision     | SAM-Audio Judge weights            |
| `aesthetics` | ContentEnjoyment, ContentUsefulness, ProductionComplexity, ProductionQuality | audiobox-aesthetics weights |
| `clap`       | CLAPSimilarity                                                   | LAION-CLAP 630k-best.pt            |
| `imagebind`  | ImageBind (visual settings only)                                 | ImageBind huge                     |
| `sisdr`      | SISDR, SISDRi, SDR (items with a reference.wav only)             | nothing (fast-bss-eval)            |

A metric whose weights cannot be had raises `MetricUnavailableError` naming the metric and how to get them,
before any item is separated.

Legend: B items, L samples at 48 kHz.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from samaudio.errors import SAMAudioError
from samaudio.eval.settings import SAMPLE_RATE


class MetricUnavailableError(SAMAudioError):
    """A metric was asked for whose model or package cannot be had here; the message says how to get it."""


@dataclass
class Separated:
    """One evaluated item: what the metrics see."""

    id: str
    description: str
    mixture: torch.Tensor  # (1, L) the input, 48 kHz
    target: torch.Tensor  # (1, L') the separated target, 48 kHz (L' >= L: the model's padded length)
    reference: torch.Tensor | None = None  # (1, L) the true target, when the dataset has it
    video: Any = None  # the masked video the model was prompted with (visual settings)


class Metric(Protocol):
    name: str
    columns: tuple[str, ...]

    def __call__(self, items: list[Separated]) -> list[dict[str, float]]:
        """One row per item: column -> value (a column left out has no value for that item)."""
        ...


class JudgeMetric:
    """The SAM-Audio Judge's four scores of (mixture, target, description) (official eval/metrics/judge.py)."""

    name = "judge"
    columns = ("JudgeOverall", "JudgeFaithfulness", "JudgeRecall", "JudgePrecision")

    def __init__(self, source: str, device: str = "cpu"):
        from samaudio.model.judge import SAMAudioJudgeModel, SAMAudioJudgeProcessor

        self.model = SAMAudioJudgeModel.from_pretrained(source).to(device).eval()
        self.processor = SAMAudioJudgeProcessor.from_pretrained(source)
        self.device = device

    @torch.inference_mode()
    def __call__(self, items: list[Separated]) -> list[dict[str, float]]:
        rows = []
        for item in items:  # one at a time, as the official default batch size: padding would change scores
            inputs = self.processor(
                [item.description], [item.mixture.float()], [item.target.float()], sampling_rate=SAMPLE_RATE
            )
            out = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
            rows.append(
                {
                    "JudgeOverall": float(out.overall[0, 0]),
                    "JudgeFaithfulness": float(out.faithfulness[0, 0]),
                    "JudgeRecall": float(out.recall[0, 0]),
                    "JudgePrecision": float(out.precision[0, 0]),
                }
            )
        return rows


class ClapMetric:
    """Cosine of the target's CLAP audio embedding with its description's (official eval/metrics/clap.py)."""

    name = "clap"
    columns = ("CLAPSimilarity",)

    def __init__(self, checkpoint: str | None, device: str = "cpu"):
        from samaudio.ranking.clap import ClapRanker
        from samaudio.ranking.config import ClapRankerConfig

        self.ranker = ClapRanker(ClapRankerConfig(checkpoint=checkpoint)).to(device)

    def __call__(self, items: list[Separated]) -> list[dict[str, float]]:
        scores = self.ranker(extracted_audio=[i.target.float() for i in items], descriptions=[i.description for i in items],
                             sample_rate=SAMPLE_RATE)  # (B, 1)
        return [{"CLAPSimilarity": float(s)} for s in scores[:, 0]]


class ImageBindMetric:
    """Cosine of the target's ImageBind audio embedding with the masked video's (official eval/metrics/imagebind.py)."""

    name = "imagebind"
    columns = ("ImageBind",)

    def __init__(self, checkpoint: str | None, device: str = "cpu"):
        from samaudio.ranking.config import ImageBindRankerConfig
        from samaudio.ranking.imagebind import ImageBindRanker

        self.ranker = ImageBindRanker(ImageBindRankerConfig(checkpoint=checkpoint)).to(device)

    def __call__(self, items: list[Separated]) -> list[dict[str, float]]:
        rows: list[dict[str, float]] = []
        for item in items:
            if item.video is None:  # a text item in a visual run: nothing to compare with
                rows.append({})
                continue
            score = self.ranker(extracted_audio=[item.target.float()], videos=[item.video], sample_rate=SAMPLE_RATE)
            rows.append({"ImageBind": float(score.reshape(-1)[0])})
        return rows


class AestheticsMetric:
    """Audiobox Aesthetics' four axes of the target (official eval/metrics/aes.py, the `audiobox-aesthetics`
    package): 10-s windows at 16 kHz, weighted by their valid fraction, de-normalised per axis."""

    name = "aesthetics"
    columns = ("ContentEnjoyment", "ContentUsefulness", "ProductionComplexity", "ProductionQuality")
    AXES = {"CE": "ContentEnjoyment", "CU": "ContentUsefulness", "PC": "ProductionComplexity", "PQ": "ProductionQuality"}

    def __init__(self, checkpoint: str | None, device: str = "cpu", predictor: Any = None):
        try:
            from audiobox_aesthetics.infer import AesPredictor
        except ImportError as e:
            raise MetricUnavailableError(
                'aesthetics needs the audiobox-aesthetics package: pip install "samaudio[eval]"'
            ) from e
        if predictor is not None:  # built elsewhere (a benchmark's random model)
            self.predictor = predictor
            return
        try:
            self.predictor = AesPredictor(checkpoint_pth=checkpoint, precision="float32")
        except Exception as e:  # noqa: BLE001 - the package raises whatever its hub client or torch.load raise
            raise MetricUnavailableError(
                f"aesthetics: cannot load {'facebook/audiobox-aesthetics from the hub' if checkpoint is None else checkpoint} "
                f"({type(e).__name__}: {str(e)[:200]}); download its checkpoint (the model card of "
                "facebook/audiobox-aesthetics links checkpoint.pt) and pass it as the aesthetics checkpoint"
            ) from e

    def __call__(self, items: list[Separated]) -> list[dict[str, float]]:
        out = self.predictor.forward([{"path": i.target.float().cpu(), "sample_rate": SAMPLE_RATE} for i in items])
        return [{self.AXES[k]: float(v) for k, v in row.items() if k in self.AXES} for row in out]


class SISDRMetric:
    """SI-SDR of the target against the reference, its improvement over the mixture, and SDR (fast-bss-eval).

    Not in the official harness (which is reference-free); computed for items that have a reference.wav, on
    the reference's length.
    """

    name = "sisdr"
    columns = ("SISDR", "SISDRi", "SDR")

    def __init__(self) -> None:
        try:
            import fast_bss_eval  # noqa: F401
        except ImportError as e:
            raise MetricUnavailableError('sisdr needs the fast-bss-eval package: pip install "samaudio[eval]"') from e

    def __call__(self, items: list[Separated]) -> list[dict[str, float]]:
        import fast_bss_eval

        rows: list[dict[str, float]] = []
        for item in items:
            if item.reference is None:
                rows.append({})
                continue
            n = item.reference.shape[-1]
            ref = item.reference[..., :n].double()
            est = item.target[..., :n].double()
            mix = item.mixture[..., :n].double()
            sisdr = float(fast_bss_eval.si_sdr(ref, est, zero_mean=True).reshape(-1)[0])
            base = float(fast_bss_eval.si_sdr(ref, mix, zero_mean=True).reshape(-1)[0])
            sdr = float(fast_bss_eval.sdr(ref, est, filter_length=512, zero_mean=True).reshape(-1)[0])
            rows.append({"SISDR": sisdr, "SISDRi": sisdr - base, "SDR": sdr})
        return rows


METRIC_NAMES = ("judge", "aesthetics", "clap", "imagebind", "sisdr")


def build_metrics(names: list[str], weights: dict[str, str | None], device: str = "cpu") -> list[Metric]:
    """The metrics `names` asks for, each from `weights[name]` (a folder, file or hub id; None: the official one)."""
    from samaudio.errors import CheckpointError, ModelUnavailableError

    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown:
        raise MetricUnavailableError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRIC_NAMES)}")
    how = {
        "judge": "the SAM-Audio Judge (facebook/sam-audio-judge, gated: request access, `hf auth login`), or a "
        "local folder with its config.json and weights",
        "clap": "LAION-CLAP's 630k-best.pt (hub lukewys/laion_clap), or a local checkpoint file",
        "imagebind": "ImageBind huge's imagebind_huge.pth, or a local checkpoint file",
    }
    metrics: list[Metric] = []
    for name in names:
        source = weights.get(name)
        try:
            if name == "judge":
                metrics.append(JudgeMetric(source or "facebook/sam-audio-judge", device))
            elif name == "clap":
                metrics.append(ClapMetric(source, device))
            elif name == "imagebind":
                metrics.append(ImageBindMetric(source, device))
            elif name == "aesthetics":
                metrics.append(AestheticsMetric(source, device))
            else:
                metrics.append(SISDRMetric())
        except (ModelUnavailableError, CheckpointError, FileNotFoundError, OSError) as e:
            raise MetricUnavailableError(f"metric {name!r} cannot load its weights ({e}); get {how[name]}") from e
    return metrics


def weights_from_paths(**paths: Path | str | None) -> dict[str, str | None]:
    return {name: None if p is None else str(p) for name, p in paths.items()}
