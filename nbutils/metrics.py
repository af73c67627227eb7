"""What the training loops count: correct predictions, per-example losses, and a loss gone bad."""
from __future__ import annotations

__all__ = ["TrainingDiverged", "accuracy", "as_per_example", "check_finite", "correct",
           "per_example"]


def correct(y_hat, y):
    """Number of correct predictions as a 0-d tensor on y's device (no host sync)."""
    if y_hat.dim() > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(dim=1)
    return (y_hat.type(y.dtype) == y).sum()


def accuracy(y_hat, y):
    """Number of correct predictions (my_utils: a float, so it syncs; the loops use ``correct``)."""
    return float(correct(y_hat, y))


def per_example(loss, y_hat, y):
    """The loss of each example; a mean-reduced loss is scaled back to the batch's sum."""
    return as_per_example(loss(y_hat, y), y)


def as_per_example(l, y):
    """A loss already computed, as :func:`per_example` gives it: a 0-d (mean) loss times the batch size."""
    return l * y.numel() if l.dim() == 0 else l


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def check_finite(first_bad_batch):
    """Raise :class:`TrainingDiverged` if a batch's loss was not finite (``first_bad_batch >= 0``)."""
    if first_bad_batch >= 0:
        raise TrainingDiverged(
            f"the training loss became NaN/inf at batch {first_bad_batch}; the learning rate is "
            f"the likely cause (try a smaller lr), or corrupt input data")
