"""Checkpoints that survive a Colab disconnect: everything needed to resume exactly, written atomically."""
from __future__ import annotations

import hashlib
import inspect
import io
import random
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .fast import keep_tensor
from .io import atomic_write_bytes
from .saved import code_digest

__all__ = ["CHECKPOINT", "Checkpoint", "CheckpointMismatch", "atomic_torch_save", "class_digest",
           "mismatch", "model_identity", "random_states", "set_random_states"]

CHECKPOINT = "checkpoint.pt"


def random_states():
    """Every random state a run draws from: torch's (and each GPU's), Python's and NumPy's."""
    states = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states):
    """Put back what :func:`random_states` returned."""
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def atomic_torch_save(obj, path):
    """``torch.save`` to ``path`` atomically (:func:`~nbutils.io.atomic_write_bytes`)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


class CheckpointMismatch(ValueError):
    """A checkpoint was made with other code or parameters; it is never mixed into this run."""


def model_identity(net) -> dict:
    """What a checkpoint records of the model, beside the run's parameters: the digest of the
    ``#@save`` code this process runs (nbutils/coursework.py), the model's class and its code, its
    listing, and the names and shapes of its state. A dropout edit changes the first, second to
    last and, for a class pasted into a notebook, the third."""
    cls = type(net)
    return {"code": code_digest(), "model": f"{cls.__module__}.{cls.__qualname__}",
            "model_code": class_digest(cls), "listing": repr(net),
            "state": {k: list(v.shape) for k, v in net.state_dict().items()}}


def class_digest(cls) -> str:
    """A digest of the code of ``cls``'s own methods and those of its bases short of torch's: their
    bytecode, constants and names, the same in every process of one Python version."""
    parts = []
    for klass in cls.__mro__:
        if klass in (nn.Module, object) or klass.__module__.startswith("torch."):
            break
        for name, value in sorted(vars(klass).items()):
            if inspect.isfunction(value):
                parts.append(f"{klass.__qualname__}.{name}:{code_text(value.__code__)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def code_text(code: types.CodeType) -> str:
    def const(c):
        if isinstance(c, types.CodeType):
            return code_text(c)
        return repr(sorted(map(repr, c))) if isinstance(c, frozenset) else repr(c)  # hash-seeded order
    return repr((code.co_code, [const(c) for c in code.co_consts], code.co_names, code.co_varnames))


def mismatch(theirs: dict, ours: dict) -> str:
    """What differs between a saved identity and this run's, in words; "" when nothing does."""
    if "code" in ours and "code" not in theirs:
        return "it records no model code (it was made before checkpoints did)"
    found = []
    for key, value in ours.items():
        if theirs.get(key) == value:
            continue
        if key == "listing":
            old, new = theirs.get(key, "").splitlines(), value.splitlines()
            changed = [f"{a.strip()!r} became {b.strip()!r}" for a, b in zip(old, new) if a != b]
            found.append("the model's listing: " + ("; ".join(changed) or "its layers changed"))
        elif key in ("code", "model_code"):
            found.append("the #@save code" if key == "code" else "the model class's code")
        elif key == "state":
            found.append("the names or shapes of the model's weights")
        elif key == "fast" and isinstance(theirs.get(key), bool):
            loops = {True: "the fast path", False: "my_utils' loop"}
            found.append(f"the training loop: saved {loops[theirs[key]]}, now {loops[value]}")
        else:
            found.append(f"{key}: saved {theirs.get(key)!r}, now {value!r}")
    return ", ".join(dict.fromkeys(found))


class Checkpoint:
    """A run's whole state at the end of each epoch, in one file (``train_ch3(checkpoint=...)``).

    It holds the model, the optimizer, the scheduler, the history so far, every random state (torch,
    CUDA, Python, NumPy), the training loader's shuffling and the trainer's own state, if it keeps
    one, so that a resumed run continues exactly as an uninterrupted one would. ``params``: what the
    run computes (:func:`~nbutils.runs.run_identity`, with :func:`model_identity` for a run of the
    notebooks); a checkpoint made with other code or parameters is refused, never mixed in.
    ``resume=False`` starts over and replaces the file at the first epoch's end.
    """

    def __init__(self, path, params: dict, resume=True, log=print):
        self.path, self.params, self.resume, self.log = Path(path), dict(params), resume, log

    def read(self):
        """The saved state, or None where there is no file to resume from."""
        if not (self.resume and self.path.exists()):
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as e:  # a file cut short by a full disk, or not a checkpoint at all
            raise CheckpointMismatch(f"{self.path} is not a readable checkpoint ({e}); delete it or "
                                     f"set resume=False to start over") from e

    def mismatch(self) -> str:
        """How the saved checkpoint differs from this run ("" when it matches or there is none)."""
        state = self.read()
        return mismatch(state.get("params", {}), self.params) if state is not None else ""

    def load(self):
        """The saved state if there is one to resume from, else None."""
        state = self.read()
        differing = mismatch(state.get("params", {}), self.params) if state is not None else ""
        if differing:
            raise CheckpointMismatch(f"{self.path} was made with other code or parameters "
                                     f"({differing}); use another run_dir/checkpoint_dir, or "
                                     f"resume=False to start over (the old results are kept)")
        return state

    def restore(self, net, optimizer, scheduler, loader, trainer=None):
        """Put the saved state into the live objects; returns the history so far ([] for a new run)."""
        state = self.load()
        if state is None:
            return []
        net.load_state_dict(state["model"])
        load_optimizer_in_place(optimizer, state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        set_random_states(state["rng"])
        if state["loader_rng"] is not None:
            loader.generator.set_state(state["loader_rng"])
        if state.get("trainer") is not None:
            trainer.load_state_dict(state["trainer"])
        self.log(f"resuming from {self.path} after epoch {len(state['history'])}")
        return state["history"]

    def save(self, net, optimizer, scheduler, history, loader, trainer=None):
        """Write the run's whole state (temporary file, then rename). A trainer that keeps state
        of its own (a ``state_dict``: the tools' stack of runs) has it saved with the rest."""
        generator = getattr(loader, "generator", None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({
            "model": net.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "history": list(history), "params": self.params, "rng": random_states(),
            "loader_rng": generator.get_state() if generator is not None else None,
            "trainer": trainer.state_dict() if hasattr(trainer, "state_dict") else None,
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
        keep_tensor(group, "lr", lr)
