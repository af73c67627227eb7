"""nbutils.train: the my_utils loop port, its helpers and its refusals."""
import math

import pytest
import torch
from torch import nn

import nbutils as nb
from nbutils.tools.sweep import make_cut_scheduler
from conftest import TINY


def tiny_loaders(root, batch_size=20, **kw):
    return nb.load_data_fashion_mnist(batch_size, root=root, num_workers=0, spec=TINY, **kw)


def test_accumulator_and_timer():
    acc = nb.Accumulator(2)
    acc.add(1, 2.5)
    acc.add(torch.tensor(3.0), 0.5)
    assert (acc[0], acc[1]) == (4.0, 3.0)
    acc.reset()
    assert acc[0] == 0.0
    timer = nb.Timer()
    timer.stop()
    timer.start()
    timer.stop()
    assert len(timer.times) == 2 and timer.sum() == pytest.approx(timer.cumsum()[-1])
    assert timer.avg() == pytest.approx(timer.sum() / 2)


def test_accuracy_counts_argmax_hits():
    y_hat = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert nb.accuracy(y_hat, torch.tensor([1, 0, 0])) == 2.0


def test_devices():
    assert nb.try_gpu(99) == torch.device("cpu")
    assert nb.try_all_gpus()[0].type in ("cpu", "cuda")
    assert nb.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be"):
        nb.resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_cuda_is_refused():
    with pytest.raises(ValueError, match="device='cuda' but CUDA is not available"):
        nb.resolve_device("cuda")


def test_evaluate_uses_eval_mode_without_grad_and_restores_mode(tiny_root):
    _, test_iter = tiny_loaders(tiny_root)
    net = nb.NeuralNetwork().train()
    seen = []
    net.register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_grad_enabled())))
    a = nb.evaluate_accuracy(net, test_iter)
    assert a == nb.evaluate_accuracy(net, test_iter)  # dropout off: deterministic
    assert set(seen) == {(False, False)} and net.training
    loss, acc = nb.evaluate(net, test_iter, nn.CrossEntropyLoss())
    assert acc == a and loss == pytest.approx(nb.evaluate_loss(net, test_iter, nn.CrossEntropyLoss()))


def test_evaluate_weighs_partial_batches_per_example(tiny_root):
    net = nb.NeuralNetwork()
    loss = nn.CrossEntropyLoss(reduction="none")
    full = nb.evaluate_loss(net, tiny_loaders(tiny_root, 100)[1], loss)
    partial = nb.evaluate_loss(net, tiny_loaders(tiny_root, 30)[1], loss)  # 30, 30, 30, 10
    assert partial == pytest.approx(full, rel=1e-5)


def test_short_cpu_training_run_learns(tiny_root):
    torch.manual_seed(0)
    train_iter, test_iter = tiny_loaders(tiny_root)
    net = nb.init_weights(nb.NeuralNetwork())
    opt = nb.make_optimizer(net, "adam", lr=1e-3, weight_decay=5e-4)
    history = nb.train_ch3(net, train_iter, test_iter, nn.CrossEntropyLoss(), 3, opt,
                           nb.make_scheduler(opt), device="cpu")
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert set(history[0]) == set(nb.History.FIELDS)
    losses = history.column("train_loss")
    assert losses[-1] < losses[0]
    assert history[-1]["test_acc"] > 0.5  # 10 classes: chance is 0.1
    assert history.best()["test_acc"] == max(history.column("test_acc"))


def test_scheduler_steps_on_the_test_loss_and_lr_is_recorded(tiny_root):
    train_iter, test_iter = tiny_loaders(tiny_root)
    net = nb.NeuralNetwork()
    opt = nb.make_optimizer(net, "sgd", lr=0.1, weight_decay=0)

    class Recorder(torch.optim.lr_scheduler.ReduceLROnPlateau):
        seen = []

        def step(self, metrics):
            self.seen.append(metrics)
            for g in self.optimizer.param_groups:
                g["lr"] *= 0.5

    history = nb.train_ch3(net, train_iter, test_iter, nn.CrossEntropyLoss(), 2, opt,
                           Recorder(opt))
    assert Recorder.seen == history.column("test_loss")
    assert history.column("lr") == [0.05, 0.025]


def test_the_fixed_cut_lowers_the_lr_once_after_its_epoch(tiny_root):
    """make_cut_scheduler (the lr_cut claim's): epoch 3 trains at the cut lr, whatever the loss did."""
    train_iter, test_iter = tiny_loaders(tiny_root)
    net = nb.NeuralNetwork()
    opt = nb.make_optimizer(net, "adam", lr=1e-3)
    history = nb.train_ch3(net, train_iter, test_iter, nn.CrossEntropyLoss(), 3, opt,
                           make_cut_scheduler(opt, epoch=2))
    assert history.column("lr") == pytest.approx([1e-3, 1e-4, 1e-4])
    assert [epoch for epoch, *_ in history.lr_cuts()] == [2]


def test_history_lists_each_cut_of_the_learning_rate_at_the_epoch_it_came():
    history = nb.History(dict(epoch=e, lr=lr) for e, lr in enumerate([1e-3, 1e-3, 1e-4, 1e-4, 1e-5], 1))
    assert history.lr_cuts() == [(3, 1e-3, 1e-4), (5, 1e-4, 1e-5)]
    assert nb.History(dict(epoch=e, lr=1e-3) for e in (1, 2, 3)).lr_cuts() == []
    assert nb.History([dict(epoch=1, lr=None), dict(epoch=2, lr=None)]).lr_cuts() == []  # no optimizer


def test_my_utils_updater_function_still_works(tiny_root):
    train_iter, _ = tiny_loaders(tiny_root)
    net = nb.NeuralNetwork()
    params = list(net.parameters())

    def sgd(batch_size):
        with torch.no_grad():
            for p in params:
                p -= 0.01 * p.grad / batch_size
                p.grad.zero_()

    loss, acc = nb.train_epoch_ch3(net, train_iter, nn.CrossEntropyLoss(reduction="none"), sgd)
    assert math.isfinite(loss) and 0 <= acc <= 1


def test_nan_loss_names_epoch_and_batch(tiny_root):
    train_iter, test_iter = tiny_loaders(tiny_root)
    net = nb.NeuralNetwork()
    opt = nb.make_optimizer(net, "sgd", lr=0.01, weight_decay=0)
    calls = {"n": 0}

    def poisoned(y_hat, y):
        calls["n"] += 1
        l = nn.functional.cross_entropy(y_hat, y)
        return l * float("nan") if calls["n"] == 3 else l

    with pytest.raises(nb.TrainingDiverged, match=r"epoch 1: .*batch 2; the learning rate"):
        nb.train_ch3(net, train_iter, test_iter, poisoned, 2, opt)


def test_bad_epochs_cut_and_precision_are_refused_before_any_work(tiny_root):
    net = nb.NeuralNetwork()
    opt = nb.make_optimizer(net)
    with pytest.raises(ValueError, match="epoch must be an integer >= 1, got 0"):
        make_cut_scheduler(opt, epoch=0)
    for bad in (1, "0.1"):
        with pytest.raises(ValueError, match=f"factor must be a number between 0 and 1, got {bad!r}"):
            make_cut_scheduler(opt, factor=bad)
    with pytest.raises(ValueError, match="num_epochs must be an integer >= 1"):
        nb.train_ch3(net, [], [], nn.CrossEntropyLoss(), 0, opt)
    with pytest.raises(ValueError, match="trainer= and checkpoint= need net to be an nn.Module"):
        nb.train_ch3(lambda X: X, [], [], nn.CrossEntropyLoss(), 1, opt, trainer=object())


def test_without_a_frontend_each_epoch_is_one_printed_line(tiny_root, capsys):
    """What `reproduce` streams to the terminal while notebook 04 trains."""
    train_iter, test_iter = tiny_loaders(tiny_root)
    net = nb.NeuralNetwork()
    opt = nb.make_optimizer(net)
    nb.train_ch3(net, train_iter, test_iter, nn.CrossEntropyLoss(), 2, opt)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert "train loss" in lines[0] and "test acc" in lines[0] and lines[0].endswith(" s")
    test_iter.split = "validation"  # the honest protocol's held-out images, named as they are
    nb.train_ch3(net, train_iter, test_iter, nn.CrossEntropyLoss(), 1, opt)
    assert "validation acc" in capsys.readouterr().out


def test_the_animator_sees_every_epoch(tiny_root):
    train_iter, test_iter = tiny_loaders(tiny_root)
    net = nb.NeuralNetwork()
    opt = nb.make_optimizer(net)
    animator = nb.training_animator(2, live=False)
    nb.train_ch3(net, train_iter, test_iter, nn.CrossEntropyLoss(), 2, opt, animator=animator)
    assert animator.X == [[1, 2]] * 4 and animator.Y[3] == [1e-3, 1e-3]  # the lr panel too


def test_the_same_seed_repeats_a_run(tiny_root):
    def run():
        torch.manual_seed(5)
        train_iter, test_iter = tiny_loaders(tiny_root, seed=5)
        net = nb.init_weights(nb.NeuralNetwork())
        opt = nb.make_optimizer(net)
        return nb.train_ch3(net, train_iter, test_iter, nn.CrossEntropyLoss(), 1, opt)
    a, b = run(), run()
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in a] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in b]


@pytest.mark.cuda
def test_train_ch3_on_cuda(tiny_root):
    train_iter, test_iter = tiny_loaders(tiny_root)
    net = nb.NeuralNetwork()
    opt = nb.make_optimizer(net)
    history = nb.train_ch3(net, train_iter, test_iter, nn.CrossEntropyLoss(), 2, opt, device="cuda")
    assert next(net.parameters()).is_cuda and history[-1]["train_loss"] < history[0]["train_loss"]


def test_accumulator_keeps_no_autograd_graph_and_history_shows_in_one_line():
    w = torch.ones(3, requires_grad=True)
    metric = nb.Accumulator(2)
    metric.add((w * 2).sum(), 3)
    assert not metric.data[0].requires_grad and metric[0] == 6.0 and metric[1] == 3
    history = nb.History([dict(epoch=1, train_loss=0.51234, train_acc=0.8, test_loss=0.6,
                               test_acc=0.79, lr=1e-3, seconds=1.0)])
    assert repr(history) == "History(1 epoch, last: {'train_loss': 0.5123, 'train_acc': 0.8, 'test_acc': 0.79})"
