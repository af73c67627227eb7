"""nbutils.tools.recipe: the stronger conv-free recipe's parts, each inside the fast path's step, and
notebook 07, which defines its model and shows its training."""
import dataclasses
import json
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import torch
from torch import nn

import nbutils as nb
from nbutils.params import resolve
from nbutils.tools import recipe as recipe_module
from nbutils.tools import sweep
from nbutils.tools.recipe import (EMA, INGREDIENTS, Augment, PatchMixer, Recipe, RecipeTrainer,
                                  WarmupCosine, make_recipe)
from conftest import TINY

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "07_recipe.ipynb"


def test_patch_mixer_shapes_and_ingredients():
    X = torch.randn(4, 1, 28, 28)
    for overrides in INGREDIENTS.values():
        net = PatchMixer(Recipe(dim=32, depth=2, token_hidden=16, channel_hidden=64, **{
            k: v for k, v in overrides.items() if k not in ("token_hidden", "channel_hidden")}))
        assert net(X).shape == (4, 10)
    assert not any(isinstance(m, nn.Conv2d) for m in PatchMixer(Recipe()).modules())  # conv-free
    with pytest.raises(ValueError, match="recipe norm must be one of"):
        Recipe(norm="groupnorm")


def test_the_adam_row_trains_the_coursework_way_and_records_it():
    recipe = Recipe(dim=32, depth=1, **INGREDIENTS["Adam 1e-3, no schedule"])
    assert (recipe.lr, recipe.weight_decay) == (1e-3, 5e-4)  # what a run's metrics record
    _, _, _, opt, scheduler, hooks = make_recipe(recipe, "cpu", steps_per_epoch=10)
    assert type(opt) is torch.optim.Adam and hooks["before_update"] is None
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["weight_decay"]) == (1e-3, 5e-4)
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def test_augment_shifts_and_flips_within_the_padding():
    torch.manual_seed(0)
    X = torch.arange(28 * 28, dtype=torch.float).reshape(1, 1, 28, 28).repeat(64, 1, 1, 1)
    out = Augment(pad=2, flip=True, background=-1.0)(X)
    assert out.shape == X.shape
    for img in out[:, 0]:
        inside = img[img >= 0]
        # every kept pixel comes from the original, each row a contiguous (possibly reversed) run
        assert set(inside.long().tolist()) <= set(range(28 * 28))
        rows = [r[r >= 0] for r in img if (r >= 0).any()]
        assert all((r.diff().abs() == 1).all() for r in rows) and 24 <= len(rows) <= 28
    flipped = [(img[14][img[14] >= 0].diff() < 0).all().item() for img in out[:, 0]]
    assert 0 < sum(flipped) < 64  # some flipped, some not


def test_a_stacks_augment_pads_each_member_with_its_own_background():
    X = torch.arange(28 * 28, dtype=torch.float).reshape(1, 1, 1, 28, 28).repeat(2, 32, 1, 1, 1)
    torch.manual_seed(0)
    out = Augment(pad=2, flip=True, background=torch.tensor([-1.0, -2.0]))(X)
    assert out.shape == X.shape
    for member, background in enumerate((-1.0, -2.0)):
        padding = out[member][out[member] < 0]
        assert len(padding) and (padding == background).all()
    torch.manual_seed(0)  # the same draws as one batch of 64 images padded alike
    same = Augment(pad=2, flip=True, background=torch.tensor([-1.0, -1.0]))(X)
    torch.manual_seed(0)
    assert torch.equal(same.flatten(0, 1), Augment(pad=2, flip=True, background=-1.0)(X.flatten(0, 1)))


def test_warmup_cosine_writes_the_optimizer_tensor_lr():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=torch.tensor(0.1))
    schedule = WarmupCosine(opt, 0.1, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        schedule()
        lrs.append(float(opt.param_groups[0]["lr"]))
    assert lrs[:2] == pytest.approx([0.05, 0.1]) and lrs[-1] == pytest.approx(0.0, abs=1e-9)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))  # decays after the warm-up


def test_ema_follows_the_weights():
    net = nn.Linear(3, 1)
    ema = EMA(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(1.0)
        ema.ema_net.weight.fill_(0.0)
    ema()
    assert torch.allclose(ema.ema_net.weight, torch.full_like(net.weight, 0.5))
    assert not any(p.requires_grad for p in ema.ema_net.parameters())


def test_recipe_learns_in_the_fast_trainer(tiny_root):
    """All ingredients at once, on the tiny data: the step runs, the loss falls, the EMA is evaluated."""
    torch.manual_seed(0)
    train_iter, test_iter = nb.load_data_fashion_mnist_device(50, "cpu", root=tiny_root, spec=TINY)
    recipe = Recipe(dim=32, depth=2, token_hidden=32, channel_hidden=64, epochs=6, warmup_epochs=1,
                    lr=3e-3, ema_decay=0.9, precision="fp32")
    net, eval_net, loss, opt, sched, hooks = make_recipe(recipe, "cpu", len(train_iter))
    assert eval_net is not net and sched is None
    trainer = RecipeTrainer(net, loss, opt, "cpu", eval_net=eval_net, **hooks)
    history = nb.train_ch3(net, train_iter, test_iter, loss, recipe.epochs, opt, None, "cpu",
                           trainer=trainer)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert float(hooks["before_update"].step) == recipe.epochs * len(train_iter)
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.0, abs=1e-9)  # the cosine ended
    assert not torch.equal(next(eval_net.parameters()), next(net.parameters()))


@pytest.mark.cuda
def test_recipe_graph_capture_leaves_no_trace(tiny_root):
    """Capture's warm-up steps the schedule and the EMA too; both must be restored."""
    torch.manual_seed(0)
    train_iter, _ = nb.load_data_fashion_mnist_device(50, "cuda", root=tiny_root, spec=TINY,
                                                      drop_last=True)
    net, eval_net, loss, opt, _, hooks = make_recipe(Recipe(dim=32, depth=2, epochs=2), "cuda",
                                                     len(train_iter))
    trainer = RecipeTrainer(net, loss, opt, "cuda", "bf16", eval_net=eval_net, **hooks)
    assert trainer.graphs
    trainer.train_epoch(net, train_iter, loss, opt, "cuda")
    assert float(hooks["before_update"].step) == len(train_iter)


# ----------------------------------------------------------------------------- notebook 07
class LegacyMixerBlock(nn.Module):
    """MixerBlock as nbutils/tools/recipe.py defined it before notebook 07 did (commit 8eb332c)."""

    def __init__(self, tokens, dim, token_hidden, channel_hidden, norm, activation, residual):
        super().__init__()
        act = {"gelu": nn.GELU, "relu": nn.ReLU}[activation]
        make_norm = (lambda: nn.LayerNorm(dim)) if norm == "layernorm" else \
            (lambda: nn.BatchNorm1d(tokens))
        self.norm1, self.norm2 = make_norm(), make_norm()
        self.token_mlp = nn.Sequential(nn.Linear(tokens, token_hidden), act(),
                                       nn.Linear(token_hidden, tokens))
        self.channel_mlp = nn.Sequential(nn.Linear(dim, channel_hidden), act(),
                                         nn.Linear(channel_hidden, dim))
        self.residual = residual


class LegacyPatchMixer(nn.Module):
    """PatchMixer's construction as recipe.py had it (its forward is the same code, moved)."""

    def __init__(self, recipe, patch_size=4, num_classes=10):
        super().__init__()
        tokens = (28 // patch_size) ** 2
        self.stem = nn.Linear(patch_size ** 2, recipe.dim)
        self.blocks = nn.Sequential(*(
            LegacyMixerBlock(tokens, recipe.dim, recipe.token_hidden, recipe.channel_hidden,
                             recipe.norm, recipe.activation, recipe.residual)
            for _ in range(recipe.depth)))
        self.norm = nn.LayerNorm(recipe.dim) if recipe.norm == "layernorm" else nn.BatchNorm1d(tokens)
        self.head = nn.Linear(recipe.dim, num_classes)


def test_notebook_07s_model_starts_from_the_weights_recipe_py_gave_each_seed():
    """Moved into notebook 07 (saved to nbutils/tools/mixer.py), PatchMixer keeps its parameters'
    names and construction order: under one seed, every row's initial weights are bitwise those of
    before (checked once against the old module itself, and held here by its copy above)."""
    assert PatchMixer.__module__ == "nbutils.tools.mixer" and recipe_module.PatchMixer is PatchMixer
    for name, overrides in INGREDIENTS.items():
        settings = Recipe(**overrides)
        torch.manual_seed(0)
        new = PatchMixer(settings).state_dict()
        torch.manual_seed(0)
        old = LegacyPatchMixer(settings).state_dict()
        assert list(new) == list(old), name
        assert all(torch.equal(new[k], old[k]) and new[k].dtype == old[k].dtype for k in new), name


def notebook_cell(starts):
    (cell,) = [c for c in nbformat.read(NOTEBOOK, 4).cells if c.source.startswith(starts)]
    return cell.source


@pytest.mark.parametrize("ingredient", list(INGREDIENTS))
def test_notebook_07s_cells_build_what_make_recipe_builds(ingredient):
    """The loss, optimizer, schedule, augmentation and EMA that 07 builds in plain sight are those of
    make_recipe (the sweep's), for every row of the ablation; small sizes, so that it takes no time."""
    settings = dataclasses.replace(Recipe(**INGREDIENTS[ingredient]), dim=16, depth=1,
                                   token_hidden=8, channel_hidden=32, precision="fp32")

    class Loader:  # what the cells ask of the training loader
        def __len__(self):
            return 7

        def normalize(self, images):
            return (images.float() / 255 - 0.286) / 0.353

    ns = dict(torch=torch, nn=nn, nbutils=nb, recipe=recipe_module, PatchMixer=PatchMixer,
              the_recipe=settings, run=resolve("smoke", seed=3)[0], device=torch.device("cpu"),
              train_iter=Loader())
    for starts in ("torch.manual_seed(run.seed)", "steps = len(train_iter)", "background = float("):
        exec(notebook_cell(starts), ns)
    torch.manual_seed(3)
    net, eval_net, loss, optimizer, scheduler, hooks = make_recipe(settings, "cpu", 7, ns["background"])
    assert all(torch.equal(a, b) for a, b in zip(ns["net"].state_dict().values(),
                                                 net.state_dict().values()))
    assert list(ns["net"].state_dict()) == list(net.state_dict())
    assert ns["loss"].label_smoothing == loss.label_smoothing
    assert type(ns["optimizer"]) is type(optimizer)
    ours, theirs = ({k: float(v) if torch.is_tensor(v) else v for k, v in o.param_groups[0].items()
                     if k != "params"} for o in (ns["optimizer"], optimizer))
    assert ours == theirs
    assert type(ns["scheduler"]) is type(scheduler)
    schedule = hooks["before_update"]
    assert (ns["schedule"] is None) == (schedule is None)
    if schedule:
        assert (ns["schedule"].base, ns["schedule"].warmup, ns["schedule"].total) == \
            (schedule.base, schedule.warmup, schedule.total)
    augment = hooks["augment"]
    assert (ns["augment"] is None) == (augment is None)
    if augment:
        assert vars(ns["augment"]) == vars(augment)
    assert (ns["ema"] is None) == (hooks["after_update"] is None)
    if ns["ema"]:
        assert ns["ema"].decay == hooks["after_update"].decay and ns["eval_net"] is ns["ema"].ema_net
    else:
        assert ns["eval_net"] is ns["net"]


def test_notebook_07_computes_what_the_sweeps_run_one_computes(tmp_path, real_root):
    """papermill 07 -p profile smoke -p device cpu (120 training images, 100 test): its history,
    record for record, its one look at the test set and its run folder are run_one's for the same
    parameters."""
    given = dict(device="cpu", train_subset=120, test_subset=100)
    pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "07.ipynb"),
                        parameters=dict(given, profile="smoke", run_dir=str(tmp_path / "nb")),
                        kernel_name="python3", progress_bar=False)
    run, env = resolve("smoke", fast="on", run_dir=str(tmp_path / "one"),
                       precision=recipe_module.default_precision("cpu"), **given)
    sweep.run_one(sweep.recipe_spec(run, env, "full recipe"))
    ours, theirs = (tmp_path / "nb", tmp_path / "one")
    history = [json.loads((folder / "history.json").read_text()) for folder in (ours, theirs)]
    assert len(history[0]) == len(history[1]) == 1
    for a, b in zip(*history):
        assert {k: v for k, v in a.items() if k != "seconds"} == \
            {k: v for k, v in b.items() if k != "seconds"}
    metrics = [json.loads((folder / "metrics.json").read_text()) for folder in (ours, theirs)]
    for key in ("selected_epoch", "val_acc", "test_loss", "final_test_acc", "recipe", "ingredient",
                "protocol", "label", "seed"):
        assert metrics[0][key] == metrics[1][key], key
    written = [json.loads((folder / "params.json").read_text()) for folder in (ours, theirs)]
    assert written[0].pop("run_dir") == str(ours) and written[1].pop("run_dir") == str(theirs)
    assert written[0] == written[1]
    assert sorted(p.name for p in ours.iterdir()) == ["history.csv", "history.json", "metrics.json",
                                                      "params.json", "training.png"]
    text = "".join(o.get("text", "") for c in nbformat.read(tmp_path / "07.ipynb", 4).cells
                   for o in c.get("outputs", []))
    assert "chosen epoch 1 of 1, validation accuracy" in text
    assert f"the one look at the test set: {metrics[0]['final_test_acc']:.2%}" in text
    assert "written: history.csv history.json metrics.json params.json training.png" in text
