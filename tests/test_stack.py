"""nbutils.tools.stack: K runs trained as one stacked model give what the K runs give alone, each
member following its own seed, init, learning rate, weight decay and scheduler."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import nbutils as nb
from nbutils.fast import FastTrainer
from nbutils.params import resolve
from nbutils.tools import claims, recipe, sweep
from nbutils.tools.protocol import val_size_for
from nbutils.tools.stack import (MemberSchedulers, StackLoader, StackTrainer, StackedModel,
                                 StackedOptimizer, train_stack)
from conftest import TINY

# How far a stacked run may drift from its single run over 3 epochs of the tiny data, dropout off.
# The stack computes each member's function with batched GEMMs and batched reductions, which add up
# in another order than the single run's, so each step's gradients differ in their last bits. Adam's
# first steps turn such a difference into a weight difference of up to lr x (difference / eps) where
# a gradient is near zero, and of 2 x lr where rounding flips a ReLU whose input lies within it of
# zero (seen here: seed 2's first batch has one such input among 204,800). From there the runs drift
# apart as any two roundings of one run do: the same single run with 1 thread instead of 2 drifted by
# up to 4e-4 in loss and 2 of 500 test images over 5 epochs of the real smoke data; the stacks
# measured there drifted by up to 1.7e-3 and 3 of 500. Here it measures (and prints) 4.6e-4 in loss
# and no image: the bounds sit at about twice that, not at what would pass anything.
LOSS_TOLERANCE = 1e-3
ACC_TOLERANCE = 0.02  # of the tiny test set: 2 of its 100 images


def scheduler(setting, params):
    """A run's scheduler maker: the report's plateau, none, or (``cut``) lr / 10 after epoch 1."""
    if setting.get("cut"):
        return lambda opt: sweep.make_cut_scheduler(opt, epoch=1)
    return sweep.scheduler_maker(setting.get("scheduler", "plateau"), params.patience)


def run_params(i, setting):
    """Member i's parameters: seed i unless the setting names one."""
    given = {k: v for k, v in setting.items() if k not in ("scheduler", "cut")}
    return resolve("smoke", **dict(dict(seed=i, epochs=3), **given))[0]


def members(tiny_root, settings, dropout=False):
    """Stack members built as single runs build theirs: seeded weights and loaders."""
    out = []
    for i, setting in enumerate(settings):
        params = run_params(i, setting)
        net, loss, optimizer, _ = nb.build(params)
        if not dropout:
            net.Block1_Dropout.p = net.Block2_Dropout.p = 0.0
        train_iter, test_iter = nb.load_data_fashion_mnist_device(
            50, "cpu", root=tiny_root, spec=TINY, seed=params.seed)
        out.append(dict(net=net, optimizer=optimizer, loss=nn.CrossEntropyLoss(reduction="none"),
                        train=train_iter, eval=test_iter, key=str(i), params=params,
                        scheduler=scheduler(setting, params)))
    return out


def single_runs(tiny_root, settings, epochs=3):
    """Each member trained alone, on the fast path, as the sweep trains a single run."""
    histories = []
    for member in members(tiny_root, settings):
        make, loss = member["scheduler"], nn.CrossEntropyLoss()
        trainer = nb.FastTrainer(member["net"], loss, member["optimizer"], "cpu")
        histories.append(nb.train_ch3(member["net"], member["train"], member["eval"], loss, epochs,
                                      member["optimizer"], make(member["optimizer"]) if make else None,
                                      trainer=trainer))
    return histories


def relu_inputs_near_zero(member, within=1e-7):
    """How many inputs of the model's ReLUs lie within ``within`` of zero on the first batch: where
    rounding can flip a ReLU, and a stack's gradient differ from its single run's by far more."""
    seen = []
    for relu in (member["net"].Block1_ReLU, member["net"].Block2_ReLU):
        relu.register_forward_hook(lambda m, i, o: seen.append(int((i[0].abs() < within).sum())))
    member["net"](member["train"].batch(next(member["train"].batch_indices()))[0])
    return sum(seen)


def test_one_stacked_sgd_step_equals_each_runs_own_step(tiny_root):
    """Forward, backward and a plain update (SGD: the step is linear in the gradient) agree with each
    run's own step to 1e-6 in every parameter; each member with its own lr, decay and init. The
    members are seeds whose first batch has no ReLU input within 1e-7 (float32 rounding) of zero:
    seed 2's has one, and there rounding alone flips that ReLU, and its example's gradient path
    (the short-run test below includes seed 2)."""
    assert relu_inputs_near_zero(members(tiny_root, [{}, {}, {}])[2]) == 1
    settings = [dict(optimizer="sgd", lr=0.1, seed=1),
                dict(optimizer="sgd", lr=0.2, init="xavier_normal", seed=3),
                dict(optimizer="sgd", lr=0.1, weight_decay=0.01, seed=4)]
    assert [relu_inputs_near_zero(m) for m in members(tiny_root, settings)] == [0, 0, 0]
    alone = []
    for member in members(tiny_root, settings):
        trainer = FastTrainer(member["net"], nn.CrossEntropyLoss(), member["optimizer"], "cpu")
        trainer.train_step(member["train"], next(member["train"].batch_indices()))
        alone.append(member["net"].state_dict())
    group = members(tiny_root, settings)
    model = StackedModel([m["net"] for m in group])
    optimizer = StackedOptimizer(model.parameters(), "sgd", [m["params"].lr for m in group],
                                 [m["params"].weight_decay for m in group])
    trainer = StackTrainer(model, nn.CrossEntropyLoss(reduction="none"), optimizer, "cpu")
    loader = StackLoader([m["train"] for m in group])
    trainer.train_step(loader, next(loader.batch_indices()))
    for k, expected in enumerate(alone):
        got = model.member_state(k)
        for name, value in expected.items():
            assert torch.allclose(got[name].float(), value.float(), atol=1e-6), (k, name)


@pytest.mark.parametrize("kind, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_the_stacked_update_is_torchs_for_the_same_gradients(kind, cls):
    """Adam's and AdamW's update, member by member with its own lr and weight decay, over three
    steps: every parameter within 1e-6 of torch's optimizer given the same gradients. (Given the
    stack's own gradients the first Adam step cannot promise that: see LOSS_TOLERANCE.)"""
    torch.manual_seed(0)
    nets = [nb.NeuralNetwork() for _ in range(3)]
    settings = [(1e-3, 5e-4), (2e-3, 0.0), (5e-4, 0.05)]
    alone = [cls(n.parameters(), lr=lr, weight_decay=wd) for n, (lr, wd) in zip(nets, settings)]
    model = StackedModel(nets)
    stacked = StackedOptimizer(model.parameters(), kind, *zip(*settings))
    params, _ = model.tensors()
    for _ in range(3):
        grads = [{n: torch.randn_like(p) * 10 ** torch.randint(-9, -1, ()).item()
                  for n, p in net.named_parameters()} for net in nets]
        for net, optimizer, g in zip(nets, alone, grads):
            for n, p in net.named_parameters():
                p.grad = g[n].clone()
            optimizer.step()
        for n, p in params.items():
            p.grad = torch.stack([g[n] for g in grads])
        stacked.step()
    for k, net in enumerate(nets):
        for n, p in net.named_parameters():
            assert torch.allclose(params[n][k], p, atol=1e-6, rtol=0), (k, n)


def test_a_short_stacked_run_follows_each_of_its_runs(tiny_root):
    """Members with their own lr, init, weight decay and scheduler (a fixed cut after epoch 1 in one
    of them): their histories are the single runs' ones, to the rounding of batched GEMMs."""
    settings = [dict(), dict(lr=0.003, init="xavier_normal", scheduler="none"),
                dict(weight_decay=0.01, init="kaiming_normal", cut=True)]
    expected = single_runs(tiny_root, settings)
    group = members(tiny_root, settings)
    trainer = train_stack(group, 3, "cpu")
    histories = trainer.histories
    assert trainer.diverged == [None, None, None]
    worst = {"loss": 0.0, "acc": 0.0}
    for got, want in zip(histories, expected):
        assert [r["epoch"] for r in got] == [1, 2, 3] and set(got[0]) == set(want[0])
        assert [r["lr"] for r in got] == pytest.approx([r["lr"] for r in want], rel=1e-6)
        for a, b in zip(got, want):
            for name in ("train_loss", "test_loss"):
                worst["loss"] = max(worst["loss"], abs(a[name] - b[name]))
            for name in ("train_acc", "test_acc"):
                worst["acc"] = max(worst["acc"], abs(a[name] - b[name]))
    print("stacked against single runs, largest difference:", worst)
    assert worst["loss"] <= LOSS_TOLERANCE and worst["acc"] <= ACC_TOLERANCE
    assert [r["lr"] for r in histories[2]] == pytest.approx([1e-4, 1e-4, 1e-4])  # its cut alone
    assert [r["lr"] for r in histories[0]] == pytest.approx([1e-3] * 3)


@pytest.mark.parametrize("p", [0.1, 0.2])
def test_each_member_drops_p_of_its_activations_with_masks_of_its_own(p):
    torch.manual_seed(0)
    model = StackedModel([nn.Sequential(nn.Linear(4, 4), nn.Dropout(p)) for _ in range(3)]).train()
    with torch.no_grad():
        for name, t in model.stacked.items():
            t.copy_(torch.ones_like(t) if "weight" in name else torch.zeros_like(t))
    out = model(torch.ones(3, 20_000, 4))
    kept = out != 0
    for k in range(3):
        assert abs(1 - kept[k].float().mean().item() - p) < 0.01
    assert not torch.equal(kept[0], kept[1]) and not torch.equal(kept[1], kept[2])


def test_batchnorm_keeps_each_members_statistics_and_eval_uses_them():
    nets = [nn.Sequential(nn.BatchNorm1d(2)) for _ in range(2)]
    model = StackedModel(nets).train()
    X = torch.stack([torch.randn(64, 2), 10 + 3 * torch.randn(64, 2)])
    model(X)
    means = model.member_state(0)["0.running_mean"], model.member_state(1)["0.running_mean"]
    assert means[0].abs().max() < 0.1 and (means[1] - 1.0).abs().max() < 0.2  # momentum 0.1 of 10
    model.eval()
    out = model(torch.full((2, 3, 2), 10.0))
    assert not torch.allclose(out[0], out[1])  # each member normalises with its own statistics


def test_one_members_divergence_is_its_own_and_the_others_finish(tiny_root):
    group = members(tiny_root, [dict(), dict(), dict()])
    with torch.no_grad():
        group[1]["net"].stemLinear.weight.fill_(float("inf"))
    trainer = train_stack(group, 2, "cpu")
    assert trainer.diverged[0] is None and trainer.diverged[2] is None and trainer.diverged[1] == (1, 0)
    # the others train as a stack without the diverged member does
    alone = train_stack(members(tiny_root, [dict(seed=0), dict(seed=2)]), 2, "cpu").histories
    for k, history in zip((0, 2), alone):
        for mine, theirs in zip(trainer.histories[k], history):
            assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=LOSS_TOLERANCE)
            assert mine["test_acc"] == pytest.approx(theirs["test_acc"], abs=ACC_TOLERANCE)


def test_a_stack_whose_every_member_diverges_stops_and_says_where_each_did(tiny_root):
    group = members(tiny_root, [dict(), dict(seed=2)])
    with torch.no_grad():
        for member in group:
            member["net"].stemLinear.weight.fill_(float("inf"))
    trainer = train_stack(group, 3, "cpu")  # not TrainingDiverged: the stack's runs each failed
    assert trainer.diverged == [(1, 0), (1, 0)] and [len(h) for h in trainer.histories] == [1, 1]


def test_a_stack_refuses_optimizers_it_does_not_implement(tiny_root):
    group = members(tiny_root, [dict(optimizer="sgd"), dict(optimizer="sgd")])
    group[1]["optimizer"].param_groups[0]["momentum"] = 0.9
    with pytest.raises(ValueError, match="momentum=0.9"):
        train_stack(group, 1, "cpu")
    group = members(tiny_root, [dict(optimizer="sgd"), dict(optimizer="adam")])
    with pytest.raises(ValueError, match="one optimizer type"):
        train_stack(group, 1, "cpu")


def test_no_vmap_fallback_and_no_warning_at_all(tiny_root):
    """A batching rule torch lacks would run the model member by member ("performance drop"), and
    say so only in a warning: here every warning is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group = members(tiny_root, [dict(), dict(lr=0.002)], dropout=True)
        train_stack(group, 1, "cpu")
        model = StackedModel([nb.NeuralNetwork() for _ in range(2)])
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the bf16 step's forward
            model(torch.randn(2, 4, 1, 28, 28)).float().sum().backward()


def test_member_schedulers_cut_only_their_own_member():
    params = [torch.zeros(3, 2, requires_grad=True)]
    optimizer = StackedOptimizer(params, "sgd", [0.1, 0.1, 0.1], [0, 0, 0])
    plateau = lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)  # noqa: E731
    schedulers = MemberSchedulers(optimizer, [plateau, None, plateau])
    schedulers.step([1.0, 1.0, 1.0])
    schedulers.step([2.0, 2.0, 0.5])  # member 0 got worse: cut; member 2 better: kept
    assert optimizer.param_groups[0]["lr"].tolist() == pytest.approx([0.01, 0.1, 0.1])


def test_stack_groups_share_what_a_stack_shares_and_keep_plan_order():
    base = nb.as_dict(*resolve("smoke", device="cpu", fast="on"))
    wanted = [claims.CLAIMS["scheduler"], claims.CLAIMS["lr_cut"], claims.CLAIMS["optimizer"]]
    specs = list(claims.plan(wanted, [0, 1], base, Path("/nonexistent")).values())
    groups = claims.stack_groups(specs, 4)
    assert sum(len(g) for g in groups) == len(specs)
    for group in groups:
        assert len({claims.stack_key(s) for s in group}) == 1 and len(group) <= 4
        if claims.stack_key(group[0]) is None:
            assert len(group) == 1 and group[0]["params"]["optimizer"] == "asgd"
    assert any(len({s["scheduler"] for s in g}) > 1 for g in groups)  # cut, plateau, none together
    assert [s["label"] for s in specs].index("optimizer sgd") < len(specs)
    assert claims.stack_groups(specs, 1) == [[s] for s in specs]


def stack_specs(root, seeds=(0, 1), protocol="report"):
    base = nb.as_dict(*resolve("smoke", device="cpu", fast="on", epochs=2, train_subset=128,
                               test_subset=100, batch_size=64))
    return [dict(claims.run_spec(f"{protocol} protocol", {"protocol": protocol}, seed, base),
                 folder=str(root / "runs" / f"{protocol}-protocol-s{seed}")) for seed in seeds]


def histories(root):
    return [[{k: v for k, v in r.items() if k != "seconds"} for r in
             json.loads((root / "runs" / f"report-protocol-s{seed}" / "history.json").read_text())]
            for seed in (0, 1)]


def test_a_killed_stack_resumes_to_what_an_uninterrupted_one_gives(tmp_path, real_root):
    """The sweep's stack killed outright (SIGKILL) after its first epoch, then run again: it resumes
    from its checkpoint to the very histories of a stack that was never stopped."""
    assert sweep.run_stack(stack_specs(tmp_path / "whole"), log=lambda m: None) == 0
    killed = tmp_path / "killed"

    def start():
        return subprocess.Popen([sys.executable, "-m", "nbutils.tools.sweep", "--one",
                                 json.dumps(stack_specs(killed))],
                                env=dict(os.environ, NBUTILS_HEADLESS="1"))

    proc = start()
    deadline = time.monotonic() + 300
    while not list((killed / "stacks").glob("*.pt")):  # epoch 1 done
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list((killed / "runs").glob("*/metrics.json"))
    saved = torch.load(next((killed / "stacks").glob("*.pt")), weights_only=False)
    assert set(saved["rng"]) >= {"torch", "python", "numpy"}  # every random state, as a run's checkpoint
    assert start().wait(timeout=300) == 0  # resumes from the checkpoint
    assert histories(killed) == histories(tmp_path / "whole")


def test_an_honest_stack_stopped_before_its_results_keeps_the_epochs_it_chose(tmp_path, real_root,
                                                                            monkeypatch):
    """Under the honest protocol each member's chosen epoch and weights travel with the stack's
    checkpoint: stopped after its last epoch, before a run folder was written, the stack resumes to
    the metrics of a stack that was never stopped (a lost choice would pick among no epoch at all)."""
    def metrics(root):
        keys = ("selected_epoch", "val_acc", "test_loss", "final_test_acc", "epochs_run")
        return [{k: json.loads((Path(s["folder"]) / "metrics.json").read_text())[k] for k in keys}
                for s in stack_specs(root, protocol="honest")]

    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert sweep.run_stack(stack_specs(whole, protocol="honest"), log=lambda m: None) == 0

    def stop(*args, **kwargs):
        raise KeyboardInterrupt("stopped after the last epoch")

    with monkeypatch.context() as patch:
        patch.setattr(sweep, "finish_run", stop)
        with pytest.raises(KeyboardInterrupt):
            sweep.run_stack(stack_specs(stopped, protocol="honest"), log=lambda m: None)
    assert list((stopped / "stacks").glob("*.pt"))
    assert sweep.run_stack(stack_specs(stopped, protocol="honest"), log=lambda m: None) == 0
    assert metrics(stopped) == metrics(whole)
    assert not list((stopped / "stacks").glob("*.pt"))


def recipe_specs(root, device, precision, train_subset, test_subset):
    base = nb.as_dict(*resolve("smoke", device=device, fast="on", precision=precision,
                               train_subset=train_subset, test_subset=test_subset, epochs=2))
    return [dict(claims.run_spec("full recipe", {"recipe": "full recipe"}, seed, base),
                 folder=str(root / "runs" / f"full-recipe-s{seed}")) for seed in (0, 1)]


def assert_recipe_members_finished(specs):
    """Each member of a 2-epoch recipe stack finished as a single recipe run does, its lr on the
    recipe's cosine from its lr to zero, step by step as a single run's WarmupCosine moves it."""
    params, _ = nb.from_dict(specs[0]["params"])
    lr = recipe.recipe_for(params, "full recipe").lr
    steps = -(-(params.train_subset - val_size_for(params)) // 256)  # the recipe's batches an epoch
    single = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=torch.tensor(lr))
    schedule, expected = recipe.WarmupCosine(single, lr, 0, 2 * steps), []
    for _ in range(2):
        for _ in range(steps):
            schedule()
        expected.append(float(single.param_groups[0]["lr"]))
    assert expected[0] > 0 and expected[1] == 0
    for spec in specs:
        folder = Path(spec["folder"])
        metrics = json.loads((folder / "metrics.json").read_text())
        assert (metrics["stack"], metrics["ingredient"], metrics["protocol"]) == \
            (2, "full recipe", "honest")
        history = json.loads((folder / "history.json").read_text())
        assert [r["lr"] for r in history] == pytest.approx(expected, abs=1e-9)
        assert 0 <= metrics["final_test_acc"] <= 1 and metrics["selected_epoch"] in (1, 2)


def test_a_recipe_stack_trains_each_member_on_the_recipes_schedule(tmp_path, real_root):
    """The recipe's hooks in a stack (augment, warm-up and cosine, EMA) on the CPU, where CI sees
    them."""
    specs = recipe_specs(tmp_path, "cpu", "fp32", 300, 100)
    assert sweep.run_stack(specs, log=lambda m: None) == 0
    assert_recipe_members_finished(specs)


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_stack_graphs_replay_what_eager_steps_compute(tiny_root, precision):
    """The stacked step captured as a CUDA graph: with dropout off, its epoch equals eager steps'."""
    results = []
    for graphs in (False, True):
        group = []
        for i in range(3):
            params, _ = resolve("smoke", seed=i, device="cuda")
            net, _, optimizer, _ = nb.build(params, "cuda")
            net.Block1_Dropout.p = net.Block2_Dropout.p = 0.0
            train_iter, _ = nb.load_data_fashion_mnist_device(50, "cuda", root=tiny_root, spec=TINY,
                                                              seed=i, drop_last=True)
            group.append((net, train_iter))
        model = StackedModel([n for n, _ in group]).cuda()
        optimizer = StackedOptimizer(model.parameters(), "adam", [1e-3] * 3, [5e-4] * 3, device="cuda")
        trainer = StackTrainer(model, nn.CrossEntropyLoss(reduction="none"), optimizer, "cuda",
                               precision, graphs=graphs)
        assert trainer.graphs == graphs
        loader = StackLoader([t for _, t in group])
        for _ in range(2):
            stats = trainer.train_members(loader)
        results.append((stats, [p.detach().clone() for p in model.parameters()]))
    (a, weights_a), (b, weights_b) = results
    assert a[0] == pytest.approx(b[0], abs=1e-4 if precision == "fp32" else 1e-2)
    assert max(float((x - y).abs().max()) for x, y in zip(weights_a, weights_b)) < \
        (1e-4 if precision == "fp32" else 1e-2)


@pytest.mark.cuda
def test_cuda_recipe_stack_trains_with_its_hooks_in_the_graph(tmp_path, real_root):
    specs = recipe_specs(tmp_path, "cuda", "bf16", 1200, 500)
    assert sweep.run_stack(specs) == 0
    assert_recipe_members_finished(specs)
