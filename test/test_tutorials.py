"""The tutorial notebooks run top to bottom on the small budget, and are committed with their outputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ipykernel  # noqa: F401  (the kernel the notebooks run in)
import jupytext
import nbclient
import nbformat
import pytest
import torchrl.collectors

from torchrl_layered.collectors import registers_policy_transforms

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))


def test_every_tutorial_script_is_committed_as_a_notebook_with_its_current_cells():
    scripts = sorted(TUTORIALS.glob("0*.py"))
    assert scripts, "no tutorial scripts"
    assert [p.stem for p in NOTEBOOKS] == [p.stem for p in scripts], \
        "every tutorials/0*.py needs its .ipynb and every .ipynb its .py: run python tutorials/make_notebooks.py"
    for script in scripts:
        path = script.with_suffix(".ipynb")
        committed = [(cell.cell_type, cell.source) for cell in nbformat.read(path, as_version=4).cells]
        source = [(cell.cell_type, cell.source) for cell in jupytext.read(script).cells]
        assert committed == source, f"{path.name} is stale: run python tutorials/make_notebooks.py {path.stem[:2]}"


def skip_without_auto_registering_collectors(sources) -> None:
    """The tutorials' collectors register the hierarchy's transform themselves: TorchRL 0.13 and later."""
    if not registers_policy_transforms(torchrl.collectors.Collector) and any(
            "auto_register_policy_transforms" in source for source in sources):
        pytest.skip("the tutorial's collectors register the hierarchy's transform themselves "
                    "(auto_register_policy_transforms: TorchRL 0.13 and later)")


def test_a_tutorial_runs_as_a_plain_script(tmp_path):
    script = TUTORIALS / "03_writing_a_custom_level.py"
    skip_without_auto_registering_collectors([script.read_text()])
    env = {**os.environ, "TUTORIAL_SMALL": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), "the script printed nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_committed_notebook_holds_real_outputs_and_plots(path):
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in cells), "a code cell was never run"
    outputs = [o for c in cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot in the saved outputs"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebook_runs_top_to_bottom_on_the_small_budget(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    skip_without_auto_registering_collectors(cell.source for cell in nb.cells if cell.cell_type == "code")
    monkeypatch.setenv("TUTORIAL_SMALL", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
