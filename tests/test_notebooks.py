"""The committed notebooks: clean, parameterised, Colab-ready, and the coursework's code written in them."""
import ast
import importlib
import re
from pathlib import Path

import nbformat
import papermill as pm
import pytest

import nbutils
import nbval_reference

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def load(path):
    return nbformat.read(path, as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


# Each notebook's parameters cell lists what that notebook uses, the profile among them.
PARAMETERS = {
    "01_data.ipynb": {"profile", "batch_size", "seed", "patch_size", "train_subset", "test_subset",
                      "data_root", "run_dir"},
    "02_model.ipynb": {"profile", "patch_size"},
    "03_loss_optimizer_init.ipynb": {"profile", "lr", "weight_decay", "optimizer", "init", "seed",
                                     "patch_size", "test_subset", "data_root", "run_dir"},
    "04_training.ipynb": set(nbutils.as_dict(nbutils.Run(), nbutils.Env())),
    "05_evaluation.ipynb": {"profile", "device", "data_root", "run_dir"},
    "06_ablations.ipynb": {"run_sweep", "claims", "seeds", "profile", "jobs", "ablations_dir"},
    "07_recipe.ipynb": {"profile", "ingredient", "seed", "device", "precision", "train_subset",
                        "test_subset", "data_root", "run_dir", "live_plot", "ablations_dir"},
}


def test_the_five_tasks_the_ablations_and_the_recipe_are_there():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_", "06_", "07_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    for cell in code_cells(load(path)):
        assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_parameters_cell_of_plain_literals_naming_what_the_notebook_uses(path):
    cells = [c for c in load(path).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    tree = ast.parse(cells[0].source)
    names = []
    for stmt in tree.body:
        assert isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant), ast.dump(stmt)
        names.append(stmt.targets[0].id)
    assert sorted(names) == sorted(PARAMETERS[path.name])
    # papermill reads the same names (a comment holding " = " once hid a parameter from it)
    assert set(pm.inspect_notebook(str(path))) == set(names)


@pytest.mark.parametrize("path", NOTEBOOKS[:5], ids=lambda p: p.name)
def test_values_the_profiles_set_are_none_in_the_cell_so_that_a_typed_value_holds(path):
    cell = next(c for c in load(path).cells if "parameters" in c.metadata.get("tags", []))
    values = {}
    exec(cell.source, values)
    profiled = set(nbutils.params.load_profile("smoke")) | set(nbutils.params.load_profile("seed"))
    for name in PARAMETERS[path.name] & {"epochs", "train_subset", "test_subset"}:
        assert values[name] is None, f"{path.name}: {name} should be None (from the profile)"
    assert {"epochs", "train_subset", "test_subset"} >= set(nbutils.params.load_profile("smoke"))
    assert profiled >= {"epochs", "train_subset", "test_subset"}


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


def source(name):
    return "\n".join(c.source for c in code_cells(load(NOTEBOOKS[0].parent / name)))


def saved(name):
    return [c.source for c in code_cells(load(NOTEBOOKS[0].parent / name))
            if c.source.startswith("#@save")]


def test_the_coursework_code_is_written_in_the_notebook_of_its_task():
    assert any("def patchify(" in s for s in saved("01_data.ipynb"))
    model = next(s for s in saved("02_model.ipynb") if "class NeuralNetwork(nn.Module)" in s)
    for module in ("nn.Linear(", "nn.BatchNorm1d(", "nn.ReLU()", "nn.Dropout(", "def forward("):
        assert module in model
    assert "nbutils" not in model  # torch's own modules, nothing of the package
    assert any("def init_weights(" in s for s in saved("03_loss_optimizer_init.ipynb"))
    three = source("03_loss_optimizer_init.ipynb")
    assert "nn.CrossEntropyLoss()" in three and "torch.optim.Adam" in three
    assert "OPTIMIZERS[name](net.parameters(), lr=lr, weight_decay=weight_decay)" in three
    four = source("04_training.ipynb")
    assert "ReduceLROnPlateau(" in four
    call = four[four.index("train_ch3(net,"):]
    call = call[:call.index(")\n") + 1]
    for argument in ("train_iter, test_iter, loss, run.epochs, optimizer, scheduler, device",
                     "animator=animator", "trainer=trainer", "checkpoint=checkpoint"):
        assert argument in call
    assert 'graphs=False if env.fast == "eager" else None' in four  # fast="eager": no CUDA graphs
    assert "net, history = train_run(run, env, folder, animator)" in four  # 04's program, run in 04
    five = source("05_evaluation.ipynb")
    assert 'max(history, key=lambda record: record["test_acc"])' in five
    assert "history[-1]['test_acc']" in five


def test_notebook_04_says_how_an_edited_model_reaches_it():
    text = "\n".join(c.source for c in load(NOTEBOOKS[3]).cells)
    assert "`import nbutils` brings nbutils/coursework.py up to date" in text and "restart" in text
    # In Colab an edited class is pasted here; it calls patchify, which this notebook imports.
    assert "paste your edited class" in text
    assert "from nbutils import NeuralNetwork, init_weights, make_optimizer, patchify" in text


CITED = re.compile(r"\bnbutils((?:\.[A-Za-z_]\w*)+)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_nbutils_name_a_notebook_cites_exists(path):
    missing = []
    for cell in load(path).cells:
        for dotted in CITED.findall(cell.source):
            target = nbutils
            for i, part in enumerate(dotted.strip(".").split(".")):
                if not hasattr(target, part):
                    try:  # a submodule not imported yet: nbutils.tools.sweep
                        target = importlib.import_module(f"{target.__name__}.{part}")
                        continue
                    except (ImportError, AttributeError):
                        missing.append(f"nbutils{dotted}")
                        break
                target = getattr(target, part)
    assert missing == []


def test_checked_cells_are_the_architecture_and_patches():
    checked = {p.name: [c.source for c in nbval_reference.checked_cells(load(p))] for p in NOTEBOOKS}
    model_cells = "\n".join(checked["02_model.ipynb"])
    assert "print(net)" in model_cells and "trace_shapes" in model_cells and "p.numel()" in model_cells
    assert any("patchify" in s for s in checked["01_data.ipynb"])
    assert nbval_reference.build()  # raises if a checked cell lacks its expected output


def test_ablations_notebook_parameters_reach_the_sweep_command():
    """Each parameter of 06 is an option the sweep accepts, and the defaults are the sweep's own."""
    from nbutils.tools import claims
    cell = next(c for c in load(NOTEBOOKS[5]).cells if "parameters" in c.metadata.get("tags", []))
    values = {}
    exec(cell.source, values)
    assert values["claims"] == "all" and values["seeds"] == ",".join(map(str, claims.SEEDS))
    assert set(values["claims"].split(",")) <= set(claims.CLAIMS) | {"all"} and values["jobs"] == 1


def test_the_recipe_notebook_defines_its_model_and_shows_its_training():
    """07 writes its model in #@save cells and builds its loss, optimizer, schedule, augmentation and
    EMA in plain sight, then trains with train_ch3 under the honest protocol (not sweep.run_one)."""
    model = "\n".join(saved("07_recipe.ipynb"))
    assert "class MixerBlock(nn.Module)" in model and "class PatchMixer(nn.Module)" in model
    seven = source("07_recipe.ipynb")
    for shown in ("nn.CrossEntropyLoss(label_smoothing=the_recipe.label_smoothing)",
                  "torch.optim.AdamW(", "recipe.WarmupCosine(", "recipe.Augment(", "recipe.EMA(",
                  "protocol.honest_loaders(", "protocol.KeepBest(recipe.RecipeTrainer(",
                  "nbutils.train_ch3(net, train_iter, val_iter, loss,", "protocol.as_validation(",
                  "nbutils.evaluate(eval_net, test_iter, loss)", "sweep.finish_run("):
        assert shown in seven, shown
    assert "run_one" not in seven and "make_recipe" not in seven


def test_recipe_notebook_defaults_are_the_sweeps_first_row():
    from nbutils.tools.recipe import INGREDIENTS
    cell = next(c for c in load(NOTEBOOKS[6]).cells if "parameters" in c.metadata.get("tags", []))
    values = {}
    exec(cell.source, values)
    assert values["ingredient"] == next(iter(INGREDIENTS)) == "full recipe"
    assert values["precision"] == "" and values["seed"] == 0  # "": bf16 only where the GPU has it
    assert values["train_subset"] is None and values["test_subset"] is None  # from the profile
