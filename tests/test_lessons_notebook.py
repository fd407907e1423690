"""Every lesson is also a notebook, and a lesson that cannot draw says so before it trains.

The notebook test is the real thing, not a parse: jupytext turns lessons/00_autograd.py (its `# %%`
cells) into a notebook, nbclient runs it cell by cell in a Jupyter kernel started from this Python,
and the last cell's output must end with the lesson's `result:` line. The kernel passes its own flags
(-f kernel.json) in sys.argv; the lesson reads its arguments from TINYVISION_LESSON_ARGS there.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
NOTEBOOK_EXTRA = 'pip install -e ".[dev]" (which includes the notebook tools)'


def test_a_lesson_runs_as_a_notebook_in_a_jupyter_kernel(tmp_path, monkeypatch):
    for module in ("jupytext", "nbclient", "ipykernel"):
        pytest.importorskip(module, reason=f"{module} is not installed: {NOTEBOOK_EXTRA}")
    import jupytext
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME
    from nbclient import NotebookClient

    notebook = jupytext.read(LESSONS / "00_autograd.py")
    assert sum(cell.cell_type == "code" for cell in notebook.cells) >= 3, "the lesson should open as several cells"
    monkeypatch.setenv("TINYVISION_LESSON_ARGS", f"--quick --out {tmp_path}")
    client = NotebookClient(notebook, timeout=300, kernel_name=NATIVE_KERNEL_NAME,
                            resources={"metadata": {"path": str(LESSONS)}})
    client.execute()
    text = "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []) if out.get("output_type") == "stream")
    assert "in a Jupyter kernel: lesson arguments ['--quick'," in text
    result = [line for line in text.splitlines() if line.startswith("result: {")]
    assert len(result) == 1, text[-2000:]
    metrics = json.loads(result[0][len("result: "):])
    assert metrics["lesson"] == "00_autograd" and metrics["quick"] is True
    assert any(p.suffix == ".png" for p in tmp_path.iterdir())   # its figures went where it was told


def test_a_lesson_without_matplotlib_stops_before_training_and_names_the_extra(tmp_path):
    code = (f"import sys, runpy; sys.modules['matplotlib'] = None; sys.path.insert(0, {str(LESSONS)!r}); "
            f"sys.argv = ['00_autograd.py', '--quick', '--out', {str(tmp_path)!r}]; "
            f"runpy.run_path({str(LESSONS / '00_autograd.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TINYVISION_DEVICE="cpu"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'matplotlib is not installed' in proc.stderr and 'pip install -e ".[dev]"' in proc.stderr
    assert "step" not in proc.stdout and "result:" not in proc.stdout    # nothing was trained
    assert not list(tmp_path.iterdir())
