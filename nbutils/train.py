"""The chapter-3 training loop of my_utils, ported: on any device, without per-batch host syncs.

``train_ch3`` keeps my_utils' signature (plus optional ``scheduler``, ``device`` and ``animator``) and
returns the per-epoch :class:`History` instead of my_utils' hard asserts.
"""
from __future__ import annotations

import math
import os
import random
import time

import torch

__all__ = [
    "Accumulator", "History", "OPTIMIZERS", "Timer", "TrainingDiverged", "accuracy", "evaluate",
    "evaluate_accuracy", "evaluate_loss", "fit", "make_cut_scheduler", "make_optimizer",
    "make_scheduler", "resolve_device", "seed_everything", "train_ch3", "train_epoch_ch3",
    "training_animator", "try_all_gpus", "try_gpu",
]


# ----------------------------------------------------------------------------- small helpers
class Timer:
    """Record multiple running times (my_utils)."""

    def __init__(self):
        self.times = []
        self.start()

    def start(self):
        self.tik = time.perf_counter()

    def stop(self):
        self.times.append(time.perf_counter() - self.tik)
        return self.times[-1]

    def avg(self):
        return sum(self.times) / len(self.times)

    def sum(self):
        return sum(self.times)

    def cumsum(self):
        out, total = [], 0.0
        for t in self.times:
            total += t
            out.append(total)
        return out


class Accumulator:
    """Sums over ``n`` variables (my_utils). Values may be device tensors: nothing syncs until read."""

    def __init__(self, n):
        self.data = [0.0] * n

    def add(self, *args):
        self.data = [a + b for a, b in zip(self.data, args)]

    def reset(self):
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx):
        return float(self.data[idx])


def try_gpu(i=0):
    """``cuda:i`` if it exists, else the CPU (my_utils)."""
    if torch.cuda.device_count() >= i + 1:
        return torch.device(f"cuda:{i}")
    return torch.device("cpu")


def try_all_gpus():
    """All GPUs, or ``[cpu]`` if there is none (my_utils)."""
    devices = [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return devices if devices else [torch.device("cpu")]


def resolve_device(device=None) -> torch.device:
    """``None``/``"auto"``: the first GPU if any, else the CPU. An explicit GPU that is absent is an error."""
    if device is None or device == "auto":
        return try_gpu()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available here; use device='auto' or "
                             f"'cpu' (in Colab: Runtime > Change runtime type > GPU)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} but only {torch.cuda.device_count()} GPU(s) exist")
    elif dev.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


def seed_everything(seed=0, deterministic=False):
    """Seed Python, NumPy (if present) and torch (CPU and every GPU); optionally pin cuDNN to
    deterministic kernels. Returns the seed."""
    random.seed(seed)
    try:
        import numpy as np
        np.random.seed(seed % 2 ** 32)
    except ImportError:
        pass
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return seed


# ----------------------------------------------------------------------------- optimizer and scheduler
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "asgd": torch.optim.ASGD}


def check_optimizer_args(name, lr, weight_decay):
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float, torch.Tensor)) or not float(lr) > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or \
            not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")


def make_optimizer(params, name="adam", lr=1e-3, weight_decay=5e-4, **kwargs):
    """Adam (the report's choice), SGD or ASGD by name, with L2 weight decay."""
    check_optimizer_args(name, lr, weight_decay)
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay, **kwargs)


def make_scheduler(optimizer, patience=15, threshold=1e-8):
    """The report's ReduceLROnPlateau: mode "min" on the mean test loss, patience 15, threshold 1e-8."""
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
        raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", patience=patience,
                                                      threshold=threshold)


def make_cut_scheduler(optimizer, epoch=18, factor=0.1):
    """The learning-rate cut the report's curve shows, at a fixed epoch: lr times ``factor`` from
    epoch ``epoch + 1`` on, whatever the loss does (step it once per epoch).

    The report's ReduceLROnPlateau (patience 15) could cut after epoch 18 only if the loss it watched
    was lowest at epoch 2. Our test loss is lowest around epochs 15-21, so the same scheduler never
    cuts within 30 epochs; this replays the report's cut, to ask what the cut itself is worth.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ValueError(f"epoch must be an integer >= 1, got {epoch!r}")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor < 1:
        raise ValueError(f"factor must be a number between 0 and 1, got {factor!r}")
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[epoch], gamma=factor)


# ----------------------------------------------------------------------------- metrics
def _correct(y_hat, y):
    """Number of correct predictions as a 0-d tensor on y's device (no host sync)."""
    if y_hat.dim() > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(dim=1)
    return (y_hat.type(y.dtype) == y).sum()


def accuracy(y_hat, y):
    """Number of correct predictions (my_utils: a float, so it syncs; loops use ``_correct``)."""
    return float(_correct(y_hat, y))


def _to(device, X, y):
    return X.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _model_device(net, device):
    if device is not None:
        return resolve_device(device)
    p = next(iter(net.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def evaluate(net, data_iter, loss=None, device=None):
    """``(mean loss, accuracy)`` over ``data_iter`` in eval mode, without gradients, in one pass.

    With ``loss=None`` the mean loss is ``nan``. The loss is read per example (reduction "none") so
    that a partial last batch weighs what it holds.
    """
    device = _model_device(net, device)
    was_training = net.training
    net.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    with torch.no_grad():
        for X, y in data_iter:
            X, y = _to(device, X, y)
            y_hat = net(X)
            if loss is not None:
                total_loss += _per_example(loss, y_hat, y).sum()
            correct += _correct(y_hat, y)
            n += y.numel()
    net.train(was_training)
    if n == 0:
        raise ValueError("data_iter is empty")
    return (float(total_loss) / n if loss is not None else math.nan), float(correct) / n


def evaluate_accuracy(net, data_iter, device=None):
    """Accuracy of ``net`` on ``data_iter`` (my_utils; now in eval mode, without grad, on the device)."""
    return evaluate(net, data_iter, None, device)[1]


def evaluate_loss(net, data_iter, loss, device=None):
    """Mean per-example loss of ``net`` on ``data_iter`` (my_utils)."""
    return evaluate(net, data_iter, loss, device)[0]


def _per_example(loss, y_hat, y):
    l = loss(y_hat, y)
    if l.dim() == 0:  # a mean-reduced loss: scale back to a sum over the batch
        l = l * y.numel()
    return l


# ----------------------------------------------------------------------------- training
class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def train_epoch_ch3(net, train_iter, loss, updater, device=None):
    """One training epoch; returns ``(mean loss, accuracy)`` (my_utils).

    ``updater`` is a torch optimizer or my_utils' ``updater(batch_size)`` function. Sums stay on the
    device and are read once at the end, so a GPU never waits for the host. A non-finite loss raises
    :class:`TrainingDiverged` naming the first bad batch.
    """
    device = _model_device(net, device)
    net.train()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    n = 0
    for batch, (X, y) in enumerate(train_iter):
        X, y = _to(device, X, y)
        y_hat = net(X)
        l = _per_example(loss, y_hat, y)
        if isinstance(updater, torch.optim.Optimizer):
            updater.zero_grad(set_to_none=True)
            (l.sum() / y.numel()).backward()  # the batch mean, whatever the loss's reduction
            updater.step()
        else:
            l.sum().backward()
            updater(X.shape[0])
        l_sum = l.detach().sum()
        total_loss += l_sum
        correct += _correct(y_hat.detach(), y)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(l_sum), batch, first_bad)
        n += y.numel()
    if n == 0:
        raise ValueError("train_iter is empty")
    check_finite(int(first_bad))
    return float(total_loss) / n, float(correct) / n


def check_finite(first_bad_batch, epoch=None):
    if first_bad_batch >= 0:
        where = f"epoch {epoch}, " if epoch is not None else ""
        raise TrainingDiverged(
            f"the training loss became NaN/inf at {where}batch {first_bad_batch}; the learning rate is "
            f"the likely cause (try a smaller lr), or corrupt input data")


class History(list):
    """Per-epoch records: epoch, train_loss, train_acc, test_loss, test_acc, lr, seconds; with a
    validation set (the honest protocol) also val_loss and val_acc, and the test columns stay empty."""

    FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds")
    VAL_FIELDS = FIELDS + ("val_loss", "val_acc")

    def column(self, name):
        return [r[name] for r in self]

    def best(self, key="test_acc"):
        """The record with the highest ``key`` accuracy (the first one on a tie)."""
        return max(self, key=lambda r: (r[key], -r["epoch"]))

    def lr_cuts(self):
        """``(epoch, lr before, lr after)`` for each fall of the learning rate after the first epoch.

        A record's lr is the one after that epoch's scheduler step, so the cut came at its end."""
        lrs = [(r["epoch"], r["lr"]) for r in self if r.get("lr") is not None]
        return [(epoch, before, after)
                for (_, before), (epoch, after) in zip(lrs, lrs[1:]) if after < before]


def training_animator(num_epochs, live=None, eval_label="test acc", lr_scale="log"):
    """The live plot of ``train_ch3``: my_utils' three curves, plus the learning rate beside them.

    ``eval_label`` "val acc" for the honest protocol, whose per-epoch evaluation is the validation
    split; ``lr_scale`` "linear" for a schedule that decays to zero (a log axis cannot show 0).
    """
    from .plotting import Animator
    animator = Animator(xlabel="epoch", xlim=[1, max(num_epochs, 2)], ylim=[0.2, 1.0],
                        legend=["train loss", "train acc", eval_label], ncols=2, figsize=(7, 2.6),
                        live=live)
    animator.config(1, xlabel="epoch", ylabel="learning rate", xlim=[1, max(num_epochs, 2)],
                    yscale=lr_scale)
    return animator


def fit(net, train_iter, test_iter, loss, num_epochs, updater, scheduler=None, device=None,
        animator=None, train_epoch=None, evaluate_fn=None, on_epoch_end=None, history=None,
        val_iter=None):
    """The epoch loop shared by :func:`train_ch3` and the fast path.

    ``train_epoch(net, train_iter, loss, updater, device)`` runs one epoch (default
    :func:`train_epoch_ch3`), ``evaluate_fn(net, test_iter, loss, device)`` one evaluation (default
    :func:`evaluate`). Each epoch is followed by one evaluation on ``test_iter``, a scheduler
    step on the mean test loss (as in the report), a :class:`History` record, the animator and
    ``on_epoch_end(history)``. Pass ``history`` to continue a resumed run.

    With ``val_iter`` (the honest protocol) the held-out validation set takes the test set's place:
    it is evaluated every epoch and the scheduler steps on its loss, while ``test_iter`` is never
    touched here (the caller evaluates the selected model on it once, at the end).
    """
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 1:
        raise ValueError(f"num_epochs must be an integer >= 1, got {num_epochs!r}")
    device = _model_device(net, device)
    net.to(device)
    train_epoch = train_epoch or train_epoch_ch3
    evaluate_fn = evaluate_fn or evaluate
    history = History(history or [])
    for epoch in range(len(history) + 1, num_epochs + 1):
        start = time.perf_counter()
        try:
            train_loss, train_acc = train_epoch(net, train_iter, loss, updater, device)
        except TrainingDiverged as e:
            raise TrainingDiverged(f"epoch {epoch}: {e}") from None
        eval_loss, eval_acc = evaluate_fn(net, val_iter or test_iter, loss, device)
        if loss is not None and not math.isfinite(eval_loss):
            raise TrainingDiverged(f"epoch {epoch}: the {'validation' if val_iter else 'test'} loss "
                                   f"is {eval_loss}; the weights are no longer finite (the learning "
                                   f"rate is the likely cause)")
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(eval_loss)
            else:
                scheduler.step()
        record = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, test_loss=eval_loss,
                      test_acc=eval_acc, lr=_current_lr(updater),
                      seconds=time.perf_counter() - start)
        if val_iter is not None:
            record.update(test_loss=None, test_acc=None, val_loss=eval_loss, val_acc=eval_acc)
        history.append(record)
        if animator:
            animator.add(epoch, (train_loss, train_acc, eval_acc))
            if record["lr"] is not None:
                animator.add(epoch, record["lr"], axis=1)
        if on_epoch_end is not None:
            on_epoch_end(history)
    if animator:
        animator.finish()
    return history


def _current_lr(updater):
    if isinstance(updater, torch.optim.Optimizer):
        return float(updater.param_groups[0]["lr"])
    return None


def train_ch3(net, train_iter, test_iter, loss, num_epochs, updater, scheduler=None, device=None,
              animator=True, on_epoch_end=None, history=None, val_iter=None):
    """Train ``net`` (my_utils' signature); returns the per-epoch :class:`History`.

    ``animator=True`` draws :func:`training_animator` (live in a notebook, silent elsewhere); pass an
    Animator of your own or ``False``.
    """
    if animator is True:
        animator = training_animator(num_epochs)
    return fit(net, train_iter, test_iter, loss, num_epochs, updater, scheduler, device,
               animator or None, on_epoch_end=on_epoch_end, history=history, val_iter=val_iter)
