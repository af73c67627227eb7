"""The committed notebooks: clean, parameterised, Colab-ready, thin."""
import ast
from pathlib import Path

import nbformat
import pytest

import nbutils
from nbutils.params import FIELDS
import nbval_reference

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def load(path):
    return nbformat.read(path, as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


# Notebooks 01-05 (the five tasks) take every run parameter; 06 takes the sweep's, 07 the recipe's.
OWN_PARAMETERS = {"06_ablations.ipynb": {"run_sweep", "claims", "seeds", "profile", "jobs",
                                         "ablations_dir"},
                  "07_recipe.ipynb": {"profile", "ingredient", "seed", "device", "precision",
                                      "data_root", "run_dir", "live_plot", "ablations_dir"}}


def test_the_five_tasks_the_ablations_and_the_recipe_are_there():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_", "06_", "07_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    for cell in code_cells(load(path)):
        assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_parameters_cell_of_plain_literals_naming_every_parameter(path):
    cells = [c for c in load(path).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    tree = ast.parse(cells[0].source)
    names = []
    for stmt in tree.body:
        assert isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant), ast.dump(stmt)
        names.append(stmt.targets[0].id)
    assert sorted(names) == sorted(OWN_PARAMETERS.get(path.name, FIELDS))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_badge_install_cell_and_gpu_metadata(path):
    nb = load(path)
    badge = (f"https://colab.research.google.com/github/{nbutils.GITHUB_REPOSITORY}/blob/main/"
             f"notebooks/{path.name}")
    assert nb.cells[0].cell_type == "markdown" and badge in nb.cells[0].source
    setup = nb.cells[1].source
    assert 'if "google.colab" in sys.modules:' in setup
    assert f"git+https://github.com/{nbutils.GITHUB_REPOSITORY}" in setup
    assert "torch" not in setup.split("if")[1].replace("torchvision", "")  # never reinstalls torch
    assert nb.metadata["accelerator"] == "GPU" and nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_stay_thin(path):
    """Logic lives in nbutils: no notebook defines a function or a class."""
    for cell in code_cells(load(path)):
        tree = ast.parse("\n".join(l for l in cell.source.splitlines() if not l.startswith("%")))
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in ast.walk(tree))


def test_checked_cells_are_the_architecture_and_patches():
    checked = {p.name: [c.source for c in nbval_reference.checked_cells(load(p))] for p in NOTEBOOKS}
    model_cells = "\n".join(checked["02_model.ipynb"])
    assert "print(net)" in model_cells and "trace_shapes" in model_cells and "count_parameters" in model_cells
    assert any("patchify" in s for s in checked["01_data.ipynb"])
    assert nbval_reference.build()  # raises if a checked cell lacks its expected output


def test_ablations_notebook_parameters_reach_the_sweep_command():
    """Each parameter of 06 is an option the sweep accepts, and the defaults are the sweep's own."""
    from nbutils import sweep
    cell = next(c for c in load(NOTEBOOKS[5]).cells if "parameters" in c.metadata.get("tags", []))
    values = {}
    exec(cell.source, values)
    assert values["claims"] == "all" and values["seeds"] == ",".join(map(str, sweep.SEEDS))
    assert set(values["claims"].split(",")) <= set(sweep.CLAIMS) | {"all"} and values["jobs"] == 1


def test_recipe_notebook_defaults_are_the_sweeps_first_row():
    from nbutils.recipe import INGREDIENTS
    cell = next(c for c in load(NOTEBOOKS[6]).cells if "parameters" in c.metadata.get("tags", []))
    values = {}
    exec(cell.source, values)
    assert values["ingredient"] == next(iter(INGREDIENTS)) == "full recipe"
    assert values["precision"] == "" and values["seed"] == 0  # "": bf16 only where the GPU has it
