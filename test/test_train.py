"""The training app runs from the command line and leaves logs and a learning-curve PNG."""
from __future__ import annotations

import subprocess
import sys


def test_train_app_writes_logs_and_plot(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "torchrl_layered.train", "collector.total_frames=1600", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert f"learning curve: {tmp_path / 'learning_curve.png'}" in result.stdout
    assert list(tmp_path.rglob("*.csv")), "the csv logger wrote nothing"
