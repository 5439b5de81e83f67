"""The learning-curve plot written at the end of a run."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_returns(frames: list[int], returns: list[float], path: Path, title: str) -> Path:
    """Episode returns against env steps, with a running mean, saved as a PNG."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(frames, returns, ".", alpha=0.35, label="episode return")
    if len(returns) >= 2:
        window = max(1, len(returns) // 10)
        smooth = [sum(returns[max(0, i - window + 1): i + 1]) / len(returns[max(0, i - window + 1): i + 1])
                  for i in range(len(returns))]
        ax.plot(frames, smooth, "-", label=f"mean of last {window}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
