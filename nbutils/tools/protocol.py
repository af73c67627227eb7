"""The honest protocol: 5,000 training images held out (stratified, one fixed draw) to drive the
scheduler and choose the epoch, so that the test set is evaluated once, on the chosen model.

``train_ch3`` needs nothing of its own for it: it evaluates the validation loader in the test set's
place (so the scheduler steps on its loss), a :class:`KeepBest` trainer keeps the chosen epoch's
weights, and :func:`as_validation` files the per-epoch numbers under ``val_loss`` and ``val_acc``."""
from __future__ import annotations

import torch

from ..data import N_TRAIN, DeviceLoader, load_subsets, pixel_stats
from ..fast import EVAL_BATCH_SIZE
from ..train import evaluate, train_epoch_ch3

__all__ = ["VAL_SEED", "VAL_SIZE", "KeepBest", "as_validation", "honest_loaders", "keep_if_best",
           "stratified_split", "val_size_for"]

VAL_SIZE = 5000
VAL_SEED = 0  # one held-out set for every run, so runs differ only by their own seed


def stratified_split(labels: torch.Tensor, n_val: int, seed: int = VAL_SEED):
    """``(kept, held_out)`` index tensors: ``n_val`` images held out, each class in its share.

    Quotas are the classes' proportions of ``n_val``, rounded down, with the remainder going to the
    largest fractions; within a class the images are a seeded random draw.
    """
    if isinstance(n_val, bool) or not isinstance(n_val, int) or not 0 < n_val < len(labels):
        raise ValueError(f"val_size must be an integer between 1 and {len(labels) - 1} (the training "
                         f"images available), got {n_val!r}")
    classes, counts = labels.unique(return_counts=True)
    share = counts.double() * n_val / len(labels)
    quota = share.floor().long()
    quota[(share - quota).argsort(descending=True)[:n_val - int(quota.sum())]] += 1
    generator = torch.Generator().manual_seed(seed)
    held = []
    for c, q in zip(classes, quota):
        members = (labels == c).nonzero().flatten()
        held.append(members[torch.randperm(len(members), generator=generator)[:q]])
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[torch.cat(held)] = False
    return keep.nonzero().flatten(), (~keep).nonzero().flatten()


def val_size_for(run):
    """5,000 held-out images of 60,000; a training subset (the smoke profile) holds out its share."""
    if not run.train_subset:
        return VAL_SIZE
    return max(10, round(VAL_SIZE * run.train_subset / N_TRAIN))


def honest_loaders(run, data_root, device, batch_size=None):
    """``(train_iter, val_iter, test_iter)`` of ``run`` on ``device`` (:class:`~nbutils.data.DeviceLoader`),
    from ``data_root``: the held-out images taken out of the training subset, normalised with the mean
    and std of the images that remain for training. ``batch_size``: the training batch (default the
    run's)."""
    (train, test), _ = load_subsets(data_root, run.train_subset, run.test_subset, run.seed)
    kept, held = stratified_split(train[1], val_size_for(run))
    mean, std = pixel_stats(train[0][kept])
    batch_size = batch_size or run.batch_size
    eval_batch = max(batch_size, EVAL_BATCH_SIZE)
    val_iter = DeviceLoader(train[0][held], train[1][held], eval_batch, False, mean, std, device,
                            run.seed)
    val_iter.split = "validation"  # what train_ch3's progress line and errors call it
    return (DeviceLoader(train[0][kept], train[1][kept], batch_size, True, mean, std, device, run.seed),
            val_iter, DeviceLoader(*test, eval_batch, False, mean, std, device, run.seed))


def as_validation(record):
    """A per-epoch record whose evaluation was the validation split: its numbers under ``val_loss``
    and ``val_acc``, the test columns left empty (the test set is seen once, at the end)."""
    return dict(record, test_loss=None, test_acc=None, val_loss=record["test_loss"],
                val_acc=record["test_acc"])


def keep_if_best(best, record, state):
    """The honest protocol's model selection, on validation only: ``best`` takes ``record``'s epoch,
    val acc and weights (``state()``) when its val acc is the highest yet."""
    if record["val_acc"] > best.get("val_acc", -1.0):
        best.update(val_acc=record["val_acc"], epoch=record["epoch"], state=state())


class KeepBest:
    """A trainer for ``train_ch3``: ``trainer``'s epochs (None: my_utils' loop), and after each
    evaluation, on the validation split, the weights of ``evaluated`` (the trained net, or the
    recipe's EMA copy) at the best epoch so far kept in ``best`` (:func:`keep_if_best`)."""

    def __init__(self, trainer, evaluated):
        self.train_epoch_fn, self.evaluate_fn = (trainer.train_epoch, trainer.evaluate) if trainer \
            else (train_epoch_ch3, evaluate)
        self.evaluated, self.best, self.epoch = evaluated, {}, 0

    def train_epoch(self, net, train_iter, loss, updater, device):
        self.epoch += 1
        return self.train_epoch_fn(net, train_iter, loss, updater, device)

    def evaluate(self, net, val_iter, loss, device):
        val_loss, val_acc = self.evaluate_fn(net, val_iter, loss, device)
        keep_if_best(self.best, dict(epoch=self.epoch, val_acc=val_acc),
                     lambda: {k: v.detach().clone() for k, v in self.evaluated.state_dict().items()})
        return val_loss, val_acc
