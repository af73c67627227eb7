"""Checkpoints that survive a Colab disconnect: everything needed to resume exactly, written atomically."""
from __future__ import annotations

import random
from pathlib import Path

import torch

from .io import atomic_torch_save

__all__ = ["CheckpointMismatch", "load_checkpoint", "restore_checkpoint", "save_checkpoint"]

CHECKPOINT = "checkpoint.pt"


class CheckpointMismatch(ValueError):
    """A checkpoint was made with other training parameters; it is never mixed into this run."""


def _rng_states():
    states = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
        states["numpy"] = np.random.get_state()
    except ImportError:
        pass
    return states


def save_checkpoint(path, net, optimizer, scheduler, history, params: dict, loader_generator=None):
    """Write the run's whole state at an epoch end (temporary file, then rename)."""
    state = {
        "model": net.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "history": list(history), "params": dict(params), "rng": _rng_states(),
        "loader_rng": loader_generator.get_state() if loader_generator is not None else None,
    }
    return atomic_torch_save(state, path)


def load_checkpoint(path, params: dict):
    """The checkpoint at ``path`` if it exists, refusing one made with other parameters."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a file cut short by a full disk, or not a checkpoint at all
        raise CheckpointMismatch(f"{path} is not a readable checkpoint ({e}); delete it or set "
                                 f"resume=False to start over") from e
    theirs = state.get("params", {})
    differing = {k: (theirs.get(k), v) for k, v in params.items() if theirs.get(k) != v}
    if differing:
        listed = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differing.items())
        raise CheckpointMismatch(f"{path} was made with other parameters ({listed}); use another "
                                 f"run_dir/checkpoint_dir, or resume=False to start over (the old "
                                 f"results are kept)")
    return state


def restore_checkpoint(state, net, optimizer, scheduler, loader_generator=None):
    """Put the saved state back into live objects; returns the history so far."""
    net.load_state_dict(state["model"])
    _load_optimizer_in_place(optimizer, state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if "numpy" in rng:
        import numpy as np
        np.random.set_state(rng["numpy"])
    if loader_generator is not None and state["loader_rng"] is not None:
        loader_generator.set_state(state["loader_rng"])
    return state["history"]


def _load_optimizer_in_place(optimizer, saved):
    # A device-tensor lr (the fast path's) must stay the same tensor: a CUDA graph points at it.
    lrs = [g["lr"] for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, lr in zip(optimizer.param_groups, lrs):
        if torch.is_tensor(lr):
            lr.fill_(float(group["lr"]))
            group["lr"] = lr
