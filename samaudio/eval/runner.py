"""Run one setting: separate each item, score it with every metric, append its row, aggregate.

Rows go to `<out>/<setting>.rows.jsonl` as soon as an item is done (one file per rank when data-parallel), so a
rerun skips what is there and an interrupted run loses at most the item in flight. The summary follows the
official harness: per-column sums and counts over all rows (all ranks), mean = sum / count, written to
`<out>/<setting>.json` with every value as a 3-decimal string, beside a CSV of all rows.

Data-parallel: with `torchrun --nproc_per_node N` (or WORLD_SIZE / RANK set), rank r takes items r, r+N, ...
of the sorted item list; every item is seeded by its id, so the rows, and so the summary, equal one process's.
Ranks meet at a gloo barrier before rank 0 aggregates.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from samaudio.eval.data import item_ids, read_item
from samaudio.eval.metrics import Metric, Separated
from samaudio.eval.separators import Separator
from samaudio.eval.settings import EvalSetting

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> "Ranks":
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))

    def init(self) -> None:
        """Join the process group (gloo: CPU tensors only are exchanged) when there is more than one rank."""
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo")

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


@dataclass
class SettingResult:
    setting: str
    means: dict[str, float]  # column -> sum / count
    counts: dict[str, int]
    items: int
    seconds_per_item: dict[str, float] = field(default_factory=dict)  # "separate" and each metric's name


def rows_path(out: Path, setting: str, ranks: Ranks) -> Path:
    suffix = "" if ranks.world == 1 else f".rank{ranks.rank}"
    return out / f"{setting}.rows{suffix}.jsonl"


def read_rows(out: Path, setting: str) -> list[dict[str, Any]]:
    """Every row written for `setting` by any rank or earlier run, one per item id (the first one kept)."""
    rows: dict[str, dict[str, Any]] = {}
    for path in sorted(out.glob(f"{setting}.rows*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows.setdefault(row["id"], row)
    return [rows[k] for k in sorted(rows)]


def evaluate_setting(
    setting: EvalSetting,
    data: Path,
    separator: Separator,
    metrics: list[Metric],
    out: Path,
    *,
    ranks: Ranks = Ranks(),
    progress: bool = True,
    limit: int | None = None,
) -> SettingResult | None:
    """Evaluate this rank's share of the setting's items (skipping done ones); rank 0 returns the summary."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    ids = item_ids(setting, data)[:limit]
    done = {row["id"] for row in read_rows(out, setting.name)}
    mine = [i for n, i in enumerate(ids) if n % ranks.world == ranks.rank and i not in done]
    if done:
        logger.info("%s: %d of %d items already done, %d to go on this rank", setting.name, len(done & set(ids)),
                    len(ids), len(mine))
    timings: dict[str, list[float]] = {"separate": []}
    with rows_path(out, setting.name, ranks).open("a") as sink:
        for item_id in tqdm(mine, desc=setting.name, unit="item", disable=not progress or ranks.rank != 0):
            item = read_item(setting, data, item_id)
            t = time.perf_counter()
            target, video = separator(item)
            target = torch.as_tensor(target)  # a separator outside the library (the thin client's) gives an array
            timings["separate"].append(time.perf_counter() - t)
            separated = Separated(item.id, item.description, item.mixture, target, item.reference, video)
            row: dict[str, Any] = {"id": item.id, "description": item.description}
            for metric in metrics:
                t = time.perf_counter()
                row.update(metric([separated])[0])
                timings.setdefault(metric.name, []).append(time.perf_counter() - t)
            sink.write(json.dumps(row) + "\n")
            sink.flush()  # a crash loses at most the item in flight
    ranks.barrier()
    if ranks.rank != 0:
        return None
    rows = [r for r in read_rows(out, setting.name) if r["id"] in set(ids)]
    result = summarise(setting.name, rows)
    result.seconds_per_item = {k: sum(v) / len(v) for k, v in timings.items() if v}
    write_outputs(out, result, rows)
    return result


def summarise(setting: str, rows: list[dict[str, Any]]) -> SettingResult:
    """Per-column sums and counts (items without a value for a column do not count for it), as officially."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for row in rows:
        for column, value in row.items():
            if column in ("id", "description"):
                continue
            sums[column] = sums.get(column, 0.0) + float(value)
            counts[column] = counts.get(column, 0) + 1
    return SettingResult(setting, {c: sums[c] / counts[c] for c in sums}, counts, len(rows))


def write_outputs(out: Path, result: SettingResult, rows: list[dict[str, Any]]) -> None:
    (out / f"{result.setting}.json").write_text(
        json.dumps({column: f"{value:.3f}" for column, value in result.means.items()}, indent=2) + "\n"
    )
    columns = ["id", "description"] + sorted({c for r in rows for c in r} - {"id", "description"})
    with (out / f"{result.setting}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def table(results: list[SettingResult]) -> str:
    """A text table: one row per setting, one column per metric column (means, 3 decimals)."""
    columns = sorted({c for r in results for c in r.means})
    width = max([len(r.setting) for r in results] + [7])
    lines = [f"{'setting':<{width}}  items  " + "  ".join(f"{c:>12}" for c in columns)]
    for r in results:
        cells = [f"{r.means[c]:>12.3f}" if c in r.means else f"{'-':>12}" for c in columns]
        lines.append(f"{r.setting:<{width}}  {r.items:>5}  " + "  ".join(cells))
    return "\n".join(lines)


def plot(out: Path, settings: list[str]) -> Path:
    """A PNG of each column's per-item distribution, one box per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = {s: read_rows(out, s) for s in settings}
    columns = sorted({c for rows in data.values() for r in rows for c in r} - {"id", "description"})
    fig, axes = plt.subplots(1, max(1, len(columns)), figsize=(3.2 * max(1, len(columns)), 3.2), squeeze=False)
    for ax, column in zip(axes[0], columns):
        values = [[float(r[column]) for r in data[s] if column in r] for s in settings]
        ax.boxplot(values, tick_labels=settings)
        ax.set_title(column, fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    fig.tight_layout()
    path = out / "distributions.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
