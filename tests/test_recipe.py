"""nbutils.tools.recipe: the stronger conv-free recipe's parts, each inside the fast path's step."""
import pytest
import torch
from torch import nn

import nbutils as nb
from nbutils.tools.recipe import (EMA, INGREDIENTS, Augment, PatchMixer, Recipe, RecipeTrainer,
                                  WarmupCosine, make_recipe)
from conftest import TINY


def test_patch_mixer_shapes_and_ingredients():
    X = torch.randn(4, 1, 28, 28)
    for overrides in INGREDIENTS.values():
        net = PatchMixer(Recipe(dim=32, depth=2, token_hidden=16, channel_hidden=64, **{
            k: v for k, v in overrides.items() if k not in ("token_hidden", "channel_hidden")}))
        assert net(X).shape == (4, 10)
    assert not any(isinstance(m, nn.Conv2d) for m in PatchMixer().modules())  # conv-free
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
                           animator=False, fast=trainer, progress=False)
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
