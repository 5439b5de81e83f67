"""The learning-curve plot written at the end of a run.

matplotlib is imported when a plot is drawn, not with the package: importing it (and its font
tables) costs ~0.5 s, which a process that trains or evaluates without plotting need not pay.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """The mean of the last ``window`` values at each position."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_learning_curve(
    path: Path,
    title: str,
    train_frames: Sequence[int],
    train_returns: Sequence[float],
    eval_frames: Sequence[int] = (),
    eval_returns: Sequence[float] = (),
    eval_success: Sequence[float] | None = None,
) -> Path:
    """Training episode returns (dots and running mean) and evaluation returns against env steps, as a PNG.

    With ``eval_success`` a second panel shows the evaluation success rate. It draws on a
    bare `Figure`, not through pyplot, so it never changes the backend of the caller (a notebook).
    """
    from matplotlib.figure import Figure

    panels = 2 if eval_success else 1
    fig = Figure(figsize=(6.5, 3.6 * panels))
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)
    ax = axes[0, 0]
    if train_returns:
        ax.plot(train_frames, train_returns, ".", color="tab:blue", alpha=0.3, label="train episode return")
        window = min(10, max(1, len(train_returns) // 5))
        ax.plot(train_frames, running_mean(train_returns, window), "-", color="tab:blue",
                label=f"train, mean of last {window}")
    if eval_returns:
        ax.plot(eval_frames, eval_returns, "o-", color="tab:orange", label="eval mean return")
    ax.set_ylabel("return")
    ax.set_title(title)
    if train_returns or eval_returns:
        ax.legend(loc="best", fontsize="small")
    if eval_success:
        axes[1, 0].plot(eval_frames, eval_success, "o-", color="tab:green")
        axes[1, 0].set_ylabel("eval success rate")
        axes[1, 0].set_ylim(-0.05, 1.05)
    axes[-1, 0].set_xlabel("env steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
