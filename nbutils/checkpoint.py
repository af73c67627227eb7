"""Checkpoints that survive a Colab disconnect: everything needed to resume exactly, written atomically."""
from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import torch

from .io import atomic_write_bytes

__all__ = ["CHECKPOINT", "Checkpoint", "CheckpointMismatch", "atomic_torch_save"]

CHECKPOINT = "checkpoint.pt"


def atomic_torch_save(obj, path):
    """``torch.save`` to ``path`` atomically (:func:`~nbutils.io.atomic_write_bytes`)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


class CheckpointMismatch(ValueError):
    """A checkpoint was made with other training parameters; it is never mixed into this run."""


class Checkpoint:
    """A run's whole state at the end of each epoch, in one file (``train_ch3(checkpoint=...)``).

    It holds the model, the optimizer, the scheduler, the history so far, every random state (torch,
    CUDA, Python, NumPy) and the training loader's shuffling, so that a resumed run continues exactly
    as an uninterrupted one would. ``params``: what the run computes (``Params.training_dict()``); a
    checkpoint made with other parameters is refused, never mixed in. ``resume=False`` starts over and
    replaces the file at the first epoch's end.
    """

    def __init__(self, path, params: dict, resume=True, log=print):
        self.path, self.params, self.resume, self.log = Path(path), dict(params), resume, log

    def load(self):
        """The saved state if there is one to resume from, else None."""
        if not (self.resume and self.path.exists()):
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as e:  # a file cut short by a full disk, or not a checkpoint at all
            raise CheckpointMismatch(f"{self.path} is not a readable checkpoint ({e}); delete it or "
                                     f"set resume=False to start over") from e
        theirs = state.get("params", {})
        differing = {k: (theirs.get(k), v) for k, v in self.params.items() if theirs.get(k) != v}
        if differing:
            listed = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differing.items())
            raise CheckpointMismatch(f"{self.path} was made with other parameters ({listed}); use "
                                     f"another run_dir/checkpoint_dir, or resume=False to start over "
                                     f"(the old results are kept)")
        return state

    def restore(self, net, optimizer, scheduler, loader):
        """Put the saved state into the live objects; returns the history so far ([] for a new run)."""
        state = self.load()
        if state is None:
            return []
        net.load_state_dict(state["model"])
        load_optimizer_in_place(optimizer, state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if state["loader_rng"] is not None:
            loader.generator.set_state(state["loader_rng"])
        self.log(f"resuming from {self.path} after epoch {len(state['history'])}")
        return state["history"]

    def save(self, net, optimizer, scheduler, history, loader):
        """Write the run's whole state (temporary file, then rename)."""
        rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
               "numpy": np.random.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        generator = getattr(loader, "generator", None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({
            "model": net.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "history": list(history), "params": self.params, "rng": rng,
            "loader_rng": generator.get_state() if generator is not None else None,
        }, self.path)


# How the fast path made the live optimizer (nbutils.fast.prepare_for_graphs): a run saved on a CPU
# and resumed on a GPU keeps the GPU's settings, not the saved ones.
LIVE_SETTINGS = ("capturable", "fused", "foreach")


def load_optimizer_in_place(optimizer, saved):
    """``optimizer.load_state_dict(saved)``, keeping the live optimizer's capture settings and its
    device-tensor lr (the fast path's) the same tensor: a CUDA graph points at it."""
    lrs = [g["lr"] for g in optimizer.param_groups]
    live = [{k: g[k] for k in LIVE_SETTINGS if k in g} for g in optimizer.param_groups]
    # torch puts each state tensor where the loaded group's settings say (capturable: on the device)
    optimizer.load_state_dict(dict(saved, param_groups=[
        dict(group, **settings) for group, settings in zip(saved["param_groups"], live)]))
    for group, lr in zip(optimizer.param_groups, lrs):
        if torch.is_tensor(lr):
            lr.copy_(torch.as_tensor(group["lr"]))
            group["lr"] = lr
