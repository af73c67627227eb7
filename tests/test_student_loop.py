"""The student's loop, through papermill as a student runs it: an edit of notebook 02's model reaches
notebook 04, and a rerun into the same run folder never resumes, nor prints, the old run."""
import json
import shutil
from pathlib import Path

import nbformat
import papermill as pm
import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(profile="smoke", epochs=1, train_subset=128, test_subset=100)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory, real_root):
    """A copy of the checkout (package, notebooks, pyproject.toml), which the kernels import through
    PYTHONPATH: the student's edit must not touch the real notebooks."""
    root = tmp_path_factory.mktemp("checkout")
    for name in ("nbutils", "notebooks"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root)
    return root


def run_04(checkout, folder, out):
    """Notebook 04 of ``checkout`` under papermill into the run folder ``folder``; its text output."""
    with pytest.MonkeyPatch.context() as env:  # the kernel inherits this process's environment
        env.setenv("PYTHONPATH", str(checkout))
        env.setenv("NBUTILS_DATA", str(REPO / "data"))
        pm.execute_notebook(str(checkout / "notebooks" / "04_training.ipynb"), str(out),
                            parameters=dict(SMALL, run_dir=str(folder)), kernel_name="python3",
                            progress_bar=False, cwd=str(out.parent))
    cells = nbformat.read(out, as_version=4).cells
    return "".join(o.get("text", "") for c in cells if c.cell_type == "code" for o in c.outputs)


def edit_dropout(checkout, p):
    """Change Block2_Dropout in notebook 02's #@save cell and save the notebook, as a student would."""
    path = checkout / "notebooks" / "02_model.ipynb"
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "".join(c["source"]).startswith("#@save\nclass"))
    source = "".join(cell["source"])
    assert "self.Block2_Dropout = nn.Dropout(0.2)" in source
    cell["source"] = source.replace("nn.Dropout(0.2)", f"nn.Dropout({p})")
    path.write_text(json.dumps(nb, indent=1))


@pytest.fixture(scope="module")
def reruns(checkout, tmp_path_factory):
    """04 trained as committed, then 02 edited (dropout 0.2 -> 0.3) and 04 rerun into the same folder."""
    work = tmp_path_factory.mktemp("runs")
    folder = work / "interactive-smoke"
    before = run_04(checkout, folder, work / "04-before.ipynb")
    edit_dropout(checkout, 0.3)
    after = run_04(checkout, folder, work / "04-after.ipynb")
    return before, after, folder


def summary_lines(text):
    return [line for line in text.splitlines() if line.startswith("epoch  1  train loss")]


def test_the_edit_reaches_notebook_04_without_an_export(reruns, checkout):
    before, after, _ = reruns
    assert "(Block2_Dropout): Dropout(p=0.2" in before and "Dropout(p=0.3" not in before
    assert "nbutils/coursework.py brought up to date with notebooks/02_model.ipynb" in after
    assert "(Block2_Dropout): Dropout(p=0.3, inplace=False)" in after  # the listing of what trains
    assert "nn.Dropout(0.3)" in (checkout / "nbutils" / "coursework.py").read_text()
    assert "nn.Dropout(0.3)" not in (REPO / "nbutils" / "coursework.py").read_text()


def test_a_rerun_after_the_edit_starts_over_and_never_prints_the_old_run(reruns):
    before, after, folder = reruns
    assert "resuming from" not in after
    assert ("Not resuming: " in after and "'(Block2_Dropout): Dropout(p=0.2, inplace=False)' became "
            "'(Block2_Dropout): Dropout(p=0.3, inplace=False)'" in after and "starts from epoch 1" in after)
    old, new = summary_lines(before), summary_lines(after)
    assert len(old) == len(new) == 1 and old != new
    previous = list((folder / "previous").iterdir())
    assert len(previous) == 1 and (previous[0] / "model.pt").exists()
    assert (previous[0] / "history.json").read_text() != (folder / "history.json").read_text()
