"""Builds the tutorial notebooks from their Python sources and executes them, so their saved outputs are real.

The tutorials are the jupytext percent-format scripts ``tutorials/0*.py`` (``# %%`` code cells,
``# %% [markdown]`` cells); each ``0*.ipynb`` next to them is generated from its script. Edit the
``.py`` (in an editor, or in Jupyter through jupytext), then rebuild its notebook:

    python tutorials/make_notebooks.py                 # build and run every notebook (minutes on a CPU)
    python tutorials/make_notebooks.py 03              # only the notebooks whose name starts with 03
    python tutorials/make_notebooks.py --small         # the quick budget the tests use (TUTORIAL_SMALL=1)
    python tutorials/make_notebooks.py --no-execute    # update the cells only, keeping the saved outputs
                                                       # of the cells whose source did not change

Each script also runs as a plain script (``TUTORIAL_SMALL=1 python tutorials/01_....py``). The tests
check that every notebook holds its script's current cells, and execute the saved ``.ipynb``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from jupytext.combine import combine_inputs_with_outputs
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def sources() -> list[Path]:
    """The tutorial scripts, in order."""
    return sorted(HERE.glob("0*.py"))


def build(script: Path) -> nbformat.NotebookNode:
    """The notebook of ``script``, with the saved outputs (and cell ids) of its existing ``.ipynb``
    kept for the cells whose source is unchanged."""
    nb = jupytext.read(script)
    existing = script.with_suffix(".ipynb")
    if existing.exists():
        saved = nbformat.read(existing, as_version=4)
        nb = combine_inputs_with_outputs(nb, saved)
        # jupytext also keeps the outputs of an edited cell that it matches by position: those are stale
        unchanged = {cell.source for cell in saved.cells if cell.cell_type == "code"}
        for cell in nb.cells:
            if cell.cell_type == "code" and cell.source not in unchanged:
                cell.outputs, cell.execution_count = [], None
                cell.metadata.pop("execution", None)
    nb.metadata.pop("jupytext", None)  # the .py holds the jupytext header; the .ipynb needs none
    nb.metadata.setdefault("language_info", {"name": "python"})
    return nb


def execute(nb: nbformat.NotebookNode, workdir: Path, small: bool, timeout: int = 1200) -> None:
    """Runs ``nb`` in place in a fresh kernel started in ``workdir``."""
    previous = os.environ.get("TUTORIAL_SMALL")
    os.environ["TUTORIAL_SMALL"] = "1" if small else "0"
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    finally:
        if previous is None:
            os.environ.pop("TUTORIAL_SMALL", None)
        else:
            os.environ["TUTORIAL_SMALL"] = previous


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="prefixes of the notebooks to build (default: all)")
    parser.add_argument("--small", action="store_true", help="run with TUTORIAL_SMALL=1")
    parser.add_argument("--no-execute", action="store_true",
                        help="update the cells without running them (unchanged cells keep their outputs)")
    args = parser.parse_args()
    for script in sources():
        if args.names and not any(script.stem.startswith(prefix) for prefix in args.names):
            continue
        nb = build(script)
        start = time.perf_counter()
        if not args.no_execute:
            execute(nb, HERE, args.small)
        nbformat.write(nb, script.with_suffix(".ipynb"))
        print(f"{script.stem}.ipynb: {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
