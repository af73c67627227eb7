"""The chapter-3 training loop of my_utils, ported: on any device, without per-batch host syncs.

``train_ch3`` keeps my_utils' signature and returns the per-epoch :class:`History` instead of my_utils'
hard asserts. Its further arguments are the fast path, the live plot and the checkpoint.
"""
from __future__ import annotations

import contextlib
import math
import time

import torch
from IPython.display import display
from torch import nn

from .data import get_fashion_mnist_labels
from .devices import resolve_device
from .metrics import TrainingDiverged, as_per_example, check_finite, correct, per_example
from .plotting import has_frontend, show_images, training_animator

__all__ = ["Accumulator", "History", "Timer", "evaluate", "evaluate_accuracy", "evaluate_loss",
           "predict_ch3", "train_ch3", "train_epoch_ch3"]


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
        # detached: my_utils' float(b) dropped autograd graphs, which a sum would otherwise keep alive
        self.data = [a + (b.detach() if torch.is_tensor(b) else b) for a, b in zip(self.data, args)]

    def reset(self):
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx):
        return float(self.data[idx])


def model_device(net, device=None):
    """``device`` if given, else where ``net``'s parameters are. A plain function (my_utils' scratch
    models, ``def net(X): ...``) hides its tensors, so its data stays on the CPU unless told."""
    if device is not None:
        return resolve_device(device)
    p = next(iter(net.parameters()), None) if isinstance(net, nn.Module) else None
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def evaluating(net):
    """Run ``net`` without gradients, a module in eval mode and back in its own mode after."""
    was_training = isinstance(net, nn.Module) and net.training
    if isinstance(net, nn.Module):
        net.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if isinstance(net, nn.Module):
            net.train(was_training)


def evaluate(net, data_iter, loss=None, device=None):
    """``(mean loss, accuracy)`` over ``data_iter`` in eval mode, without gradients, in one pass.

    With ``loss=None`` the mean loss is ``nan``. The loss is summed per example, so that a partial
    last batch weighs what it holds (my_utils' ``evaluate_loss`` averaged a mean loss per batch).
    """
    device = model_device(net, device)
    total_loss = torch.zeros((), device=device)
    hits = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    with evaluating(net):
        for X, y in data_iter:
            X, y = X.to(device, non_blocking=True), y.to(device, non_blocking=True)
            y_hat = net(X)
            if loss is not None:
                total_loss += per_example(loss, y_hat, y).sum()
            hits += correct(y_hat, y)
            n += y.numel()
    if n == 0:
        raise ValueError("data_iter is empty")
    return (float(total_loss) / n if loss is not None else math.nan), float(hits) / n


def evaluate_accuracy(net, data_iter, device=None):
    """Accuracy of ``net`` on ``data_iter`` (my_utils; now in eval mode, without grad, on the device)."""
    return evaluate(net, data_iter, None, device)[1]


def evaluate_loss(net, data_iter, loss, device=None):
    """Mean per-example loss of ``net`` on ``data_iter`` (my_utils)."""
    return evaluate(net, data_iter, loss, device)[0]


def predict_ch3(net, test_iter, n=6, device=None):
    """Show ``n`` test images with their true and predicted labels (my_utils; in eval mode)."""
    X, y = next(iter(test_iter))
    with evaluating(net):
        preds = net(X.to(model_device(net, device))).argmax(dim=1).cpu()
    titles = [f"{t}\n{p}" for t, p in zip(get_fashion_mnist_labels(y), get_fashion_mnist_labels(preds))]
    show_images(X[:n].reshape(n, 28, 28), 1, n, titles=titles[:n])


# ----------------------------------------------------------------------------- training
def train_epoch_ch3(net, train_iter, loss, updater, device=None):
    """One training epoch; returns ``(mean loss, accuracy)`` (my_utils).

    ``updater`` is a torch optimizer or my_utils' ``updater(batch_size)`` function. Sums stay on the
    device and are read once at the end, so a GPU never waits for the host. A non-finite loss raises
    :class:`TrainingDiverged` naming the first bad batch.
    """
    device = model_device(net, device)
    if isinstance(net, nn.Module):
        net.train()
    total_loss = torch.zeros((), device=device)
    hits = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    n = 0
    for batch, (X, y) in enumerate(train_iter):
        X, y = X.to(device, non_blocking=True), y.to(device, non_blocking=True)
        y_hat = net(X)
        raw = loss(y_hat, y)
        l = as_per_example(raw, y)
        if isinstance(updater, torch.optim.Optimizer):
            updater.zero_grad(set_to_none=True)
            (l.sum() / y.numel()).backward()  # the batch mean, whatever the loss's reduction
            updater.step()
        else:
            raw.sum().backward()  # as my_utils: the updater divides by the batch size
            updater(X.shape[0])
        l_sum = l.detach().sum()
        total_loss += l_sum
        hits += correct(y_hat.detach(), y)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(l_sum), batch, first_bad)
        n += y.numel()
    if n == 0:
        raise ValueError("train_iter is empty")
    check_finite(int(first_bad))
    return float(total_loss) / n, float(hits) / n


class History(list):
    """Per-epoch records: epoch, train_loss, train_acc, test_loss, test_acc, lr, seconds; with a
    validation set (the honest protocol) also val_loss and val_acc, and the test columns stay empty."""

    FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds")
    VAL_FIELDS = FIELDS + ("val_loss", "val_acc")

    def __repr__(self):  # a notebook cell ending in train_ch3(...) shows this, not every record
        last = {k: round(v, 4) for k, v in (self[-1] if self else {}).items()
                if k in ("train_loss", "train_acc", "test_acc", "val_acc") and v is not None}
        return f"History({len(self)} epoch{'s' * (len(self) != 1)}" + (f", last: {last})" if last else ")")

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


class Progress:
    """Where training stands. In a notebook frontend, one line updated in place as the batches go by
    (at most every ``min_interval`` seconds): the epoch, the batch, a clock and the last epoch's
    numbers. It is a plain display update, not a widget, so JupyterLab's status bar keeps saying
    Busy (tqdm's widget traffic made it say Idle, jupyterlab#12616). Elsewhere, a printed line per
    epoch, so that a papermill run streams its epochs to the terminal and stores them.

    Batches are counted by a forward pre-hook on ``net``; a CUDA graph's replays call no forward, so
    on that path the line moves once per epoch (about a second)."""

    def __init__(self, net, num_epochs, train_iter, test_iter, done=0, min_interval=0.5):
        self.num_epochs, self.min_interval = num_epochs, min_interval
        self.batches = (len(test_iter), len(train_iter))
        self.split = split(test_iter)  # "test", or "validation" for the honest protocol
        self.epoch, self.last, self.counts = done + 1, "", [0, 0]  # [eval, train] forward calls
        self.first = self.epoch
        self.started = self.epoch_started = self.shown = time.monotonic()
        self.handle = display({"text/plain": self.line()}, raw=True, display_id=True) \
            if has_frontend() else None
        self.hook = net.register_forward_pre_hook(self.tick) \
            if self.handle is not None and isinstance(net, nn.Module) else None

    def tick(self, module, args):
        self.counts[module.training] += 1
        if time.monotonic() - self.shown >= self.min_interval:
            self.show()

    def line(self):
        now = time.monotonic()
        (evals, trains), (n_eval, n_train) = self.counts, self.batches
        if self.epoch > self.num_epochs and self.epoch == self.first:
            where = f"{plural(self.num_epochs, 'epoch')} already done: resumed from the checkpoint"
        elif self.epoch > self.num_epochs:
            where = f"{plural(self.num_epochs, 'epoch')} done in {clock(now - self.started)}"
        else:
            step = f"{self.split} batch {min(evals, n_eval)}/{n_eval}" if evals else \
                f"batch {min(trains, n_train)}/{n_train}"
            where = (f"epoch {self.epoch}/{self.num_epochs}, {step}, {clock(now - self.epoch_started)} "
                     f"into it ({clock(now - self.started)} in all)")
        return where + (f" | last epoch: {self.last}" if self.last else "")

    def show(self):
        self.shown = time.monotonic()
        self.handle.update({"text/plain": self.line()}, raw=True)

    def update(self, record):
        """An epoch has ended."""
        numbers = (f"train loss {record['train_loss']:.4f}, train acc {record['train_acc']:.4f}, "
                   f"{self.split} acc {record['test_acc']:.4f}")
        if self.handle is None:
            print(f"epoch {record['epoch']}/{self.num_epochs}: {numbers}, {record['seconds']:.1f} s",
                  flush=True)
            return
        self.epoch, self.last, self.counts = record["epoch"] + 1, numbers, [0, 0]
        self.epoch_started = time.monotonic()
        self.show()

    def close(self):
        if self.hook is not None:
            self.hook.remove()


def plural(n, word):
    return f"{n} {word}{'s' * (n != 1)}"


def clock(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes:02d}:{seconds:02d}"


def train_ch3(net, train_iter, test_iter, loss, num_epochs, updater, scheduler=None, device=None,
              animator=None, trainer=None, checkpoint=None):
    """Train ``net`` (my_utils' six arguments); returns the per-epoch :class:`History`, where my_utils
    returned None after hard asserts on the last epoch (train loss < 0.5, accuracies > 0.7), which
    a short run fails. ``net`` may be a plain function, as in my_utils (not with a trainer or a
    checkpoint).

    Each epoch trains on ``train_iter``, evaluates on ``test_iter`` and steps ``scheduler`` (a
    ReduceLROnPlateau on the mean test loss, as in the report); a line follows the batches in a
    notebook (one printed line per epoch elsewhere). Beyond my_utils, what notebook 04 shows:

    * ``device``: where to train (default: where ``net`` is);
    * ``animator``: the :class:`~nbutils.plotting.Animator` to plot into (default
      :func:`training_animator`, drawn live only where a notebook frontend shows it, its
      evaluation curve named after ``test_iter``'s split);
    * ``trainer``: what runs an epoch's steps, the fast path's :class:`~nbutils.fast.FastTrainer`
      (default: my_utils' :func:`train_epoch_ch3` and :func:`evaluate`); any object with those two
      methods serves (the tools' trainers for the honest protocol and for a stack of runs);
    * ``checkpoint``: a :class:`~nbutils.checkpoint.Checkpoint`, resumed from when it matches and
      written every epoch, with the trainer's own state where it keeps one (a ``state_dict``).
    """
    check_train_ch3(net, num_epochs, trainer, checkpoint)
    device = model_device(net, device)
    if isinstance(net, nn.Module):
        net.to(device)
    train_epoch, evaluate_fn = (trainer.train_epoch, trainer.evaluate) if trainer else \
        (train_epoch_ch3, evaluate)
    history = History(checkpoint.restore(net, updater, scheduler, train_iter, trainer)
                      if checkpoint else [])
    bar = Progress(net, num_epochs, train_iter, test_iter, len(history))  # above the plot
    animator = animator or training_animator(num_epochs, eval_label=f"{split(test_iter)} acc")
    for record in history:  # a resumed run's plot starts with the epochs already done
        plot_epoch(animator, record)
    try:
        for epoch in range(len(history) + 1, num_epochs + 1):
            history.append(train_one_epoch(net, epoch, train_epoch, evaluate_fn, train_iter,
                                           test_iter, loss, updater, scheduler, device))
            if checkpoint:
                checkpoint.save(net, updater, scheduler, history, train_iter, trainer)
            plot_epoch(animator, history[-1])
            bar.update(history[-1])
    finally:
        bar.close()
    animator.finish()
    return history


def check_train_ch3(net, num_epochs, trainer, checkpoint):
    """Refuse :func:`train_ch3`'s arguments that cannot work, before anything trains."""
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 1:
        raise ValueError(f"num_epochs must be an integer >= 1, got {num_epochs!r}")
    if not isinstance(net, nn.Module) and (trainer or checkpoint):
        raise ValueError("trainer= and checkpoint= need net to be an nn.Module, not a plain function")


def train_one_epoch(net, epoch, train_epoch, evaluate_fn, train_iter, test_iter, loss, updater,
                    scheduler, device):
    """One epoch of :func:`train_ch3`: train, evaluate, step the scheduler; returns its record."""
    start = time.perf_counter()
    try:
        train_loss, train_acc = train_epoch(net, train_iter, loss, updater, device)
    except TrainingDiverged as e:
        raise TrainingDiverged(f"epoch {epoch}: {e}") from None
    test_loss, test_acc = evaluate_fn(net, test_iter, loss, device)
    if loss is not None and not math.isfinite(test_loss):
        raise TrainingDiverged(f"epoch {epoch}: the {split(test_iter)} loss is {test_loss}; the "
                               f"weights are no longer finite (the learning rate is the likely cause)")
    if scheduler is not None:
        step_scheduler(scheduler, test_loss)
    return epoch_record(epoch, train_loss, train_acc, test_loss, test_acc,
                        learning_rate(updater), time.perf_counter() - start)


def learning_rate(updater):
    """The first parameter group's learning rate; None for my_utils' updater function, and for an
    optimizer that keeps one rate per slice of its parameters (a stack's trainer records each)."""
    if not isinstance(updater, torch.optim.Optimizer):
        return None
    lr = updater.param_groups[0]["lr"]
    return float(lr) if not torch.is_tensor(lr) or lr.numel() == 1 else None


def epoch_record(epoch, train_loss, train_acc, test_loss, test_acc, lr, seconds):
    """One epoch of a :class:`History` (a stack of runs makes one per run)."""
    return dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, test_loss=test_loss,
                test_acc=test_acc, lr=lr, seconds=seconds)


def split(data_iter):
    """What ``data_iter`` holds, for messages: "test", or "validation" for the honest protocol's
    held-out images (:func:`~nbutils.tools.protocol.honest_loaders` names them so)."""
    return getattr(data_iter, "split", "test")


def step_scheduler(scheduler, eval_loss):
    """A ReduceLROnPlateau steps on the epoch's evaluation loss; any other scheduler, once an epoch."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(eval_loss)
    else:
        scheduler.step()


def plot_epoch(animator, record):
    animator.add(record["epoch"], (record["train_loss"], record["train_acc"], record["test_acc"],
                                   record["lr"]))
