"""The loss-curve plot written beside trained weights (needs matplotlib, in the `train` extra)."""

from __future__ import annotations

import json
from pathlib import Path

# stage -> (logged field, panel title, log scale)
PANELS = [
    ("codec", "stft", "codec: multi-resolution STFT loss", True),
    ("codec", "snr_db", "codec: reconstruction SNR (dB)", False),
    ("flow", "loss", "flow: velocity MSE", True),
]


def plot_losses(losses_jsonl: str | Path, png: str | Path) -> Path:
    """One panel per logged curve that the run has, against the step of its stage."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(losses_jsonl).read_text().splitlines() if line.strip()]
    panels = [p for p in PANELS if any(r["stage"] == p[0] and p[1] in r for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.5 * max(1, len(panels)), 3.5), squeeze=False)
    for ax, (stage, key, title, log) in zip(axes[0], panels):
        points = [(r["step"], r[key]) for r in rows if r["stage"] == stage and key in r]
        ax.plot([p[0] for p in points], [p[1] for p in points], lw=0.8)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return Path(png)
