"""A run's parameters as notebooks, papermill and the commands give them: the profiles that fill
them, and one validation that every entry point shares, which makes the two typed values of
:mod:`nbutils.runs`: what the run computes (:class:`~nbutils.runs.Run`) and where it runs
(:class:`~nbutils.runs.Env`).

A notebook's ``parameters`` cell holds plain literals (papermill overrides them); the next cell calls
:func:`from_namespace`, which gives the two values. A value given (typed into the cell, or by
papermill) always holds; ``None`` takes the profile's value, and the report's default where the
profile says nothing. Every value is checked before any expensive work, with a message naming the
parameter and what is allowed.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import yaml

from .coursework import INITS, OPTIMIZERS
from .data import N_TEST, N_TRAIN
from .devices import resolve_device, use_fast_path
from .fast import PRECISIONS
from .runs import FIELDS, RUN_FIELDS, TRAINING_KEYS, Env, Run, as_dict, from_dict
from .saved import check_fresh

__all__ = ["DEFAULTS", "PROFILES", "TRAINING_KEYS", "Env", "Run", "as_dict", "describe", "from_dict",
           "from_namespace", "load_profile", "resolve"]  # Run, Env and their dicts: nbutils.runs

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
PROFILES = tuple(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))


DEFAULTS = as_dict(Run(), Env())
# Taken from the registries themselves, so a new optimizer or init is allowed here at once.
CHOICES = {"optimizer": tuple(OPTIMIZERS), "init": tuple(INITS), "fast": ("auto", "on", "eager", "off"),
           "precision": PRECISIONS}


def load_profile(name):
    """The YAML profile ``nbutils/profiles/<name>.yaml`` as a dict."""
    path = PROFILE_DIR / f"{name}.yaml"
    if name not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)}, got {name!r}")
    values = yaml.safe_load(path.read_text()) or {}
    unknown = set(values) - RUN_FIELDS
    if unknown:
        raise ValueError(f"{path}: unknown parameter(s) {sorted(unknown)}")
    return values


def resolve(profile="", **given) -> tuple[Run, Env]:
    """Validated ``(run, env)``: the ``given`` values, then the profile's for those given as None
    or not at all, then the report's defaults. ``profile`` "" means ``$NBUTILS_PROFILE`` or "seed"."""
    unknown = set(given) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)}; allowed: {sorted(FIELDS)}")
    profile = profile or os.environ.get("NBUTILS_PROFILE") or "seed"
    values = dict(DEFAULTS, **load_profile(profile), profile=profile)
    values.update({k: v for k, v in given.items() if v is not None})
    run, env = from_dict({name: coerce(name, value) for name, value in values.items()})
    check(run, env)
    return run, env


def from_namespace(namespace, log=print) -> tuple[Run, Env]:
    """:func:`resolve` from a notebook's globals (the parameters cell's names, whatever else is
    there), saying which values the profile filled in. A kernel still holding ``#@save`` code from
    before an edit stops here (:func:`~nbutils.saved.check_fresh`), before any work."""
    check_fresh()
    given = {k: namespace[k] for k in FIELDS if k in namespace and k != "profile"}
    run, env = resolve(namespace.get("profile", ""), **given)
    filled = {k: getattr(run, k) for k, v in given.items() if v is None and k in RUN_FIELDS}
    log(f"profile {run.profile!r}" + (": " + ", ".join(f"{k}={v!r}" for k, v in filled.items())
                                      + " from the profile" if filled else ""))
    return run, env


def describe(run: Run) -> str:
    """One line on what a run trained: a smoke run is labelled as the pipeline check it is."""
    images = f"{run.train_subset or N_TRAIN:,} training images"
    tests = f"{run.test_subset or N_TEST:,} test images"
    what = (f"{run.epochs} epoch{'s' * (run.epochs != 1)} on {images} ({tests}), "
            f"{run.optimizer} lr {run.lr:g}, batch {run.batch_size}, seed {run.seed}")
    if run.profile == "smoke":
        return (f"smoke profile, a pipeline check: {what}. Its numbers only show that the code "
                f"runs; they mean nothing about the model.")
    return f"profile {run.profile!r}: {what}"


def coerce(name, value):
    """``value`` as parameter ``name``'s type (papermill and YAML bring ints, floats and text)."""
    kind = FIELDS[name].type
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"{name} must be True or False, got {value!r}")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}" + yaml_hint(value))
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def yaml_hint(value):
    """YAML (papermill's -f and -y) reads 5e-4 as text; say so where that is what happened."""
    if isinstance(value, str):
        try:
            return f" (a string; write {float(value)!r}: YAML reads {value} as text)"
        except ValueError:
            pass
    return ""


def check(run: Run, env: Env):
    def need(ok, message):
        if not ok:
            raise ValueError(message)

    need(run.epochs >= 1, f"epochs must be >= 1, got {run.epochs}")
    need(run.batch_size >= 1, f"batch_size must be >= 1, got {run.batch_size}")
    need(math.isfinite(run.lr) and run.lr > 0, f"lr must be a finite number > 0, got {run.lr}")
    need(math.isfinite(run.weight_decay) and run.weight_decay >= 0,
         f"weight_decay must be a finite number >= 0, got {run.weight_decay}")
    need(run.patience >= 0, f"patience must be >= 0, got {run.patience}")
    need(run.seed >= 0, f"seed must be >= 0, got {run.seed}")
    need(0 <= run.train_subset <= N_TRAIN,
         f"train_subset must be 0 (all) to {N_TRAIN}, got {run.train_subset}")
    need(0 <= run.test_subset <= N_TEST, f"test_subset must be 0 (all) to {N_TEST}, got {run.test_subset}")
    need(run.patch_size >= 1 and 28 % run.patch_size == 0,
         f"patch_size must divide 28: one of [1, 2, 4, 7, 14, 28], got {run.patch_size}")
    for name, allowed in CHOICES.items():
        value = getattr(run if name in RUN_FIELDS else env, name)
        need(value in allowed, f"{name} must be one of {list(allowed)}, got {value!r}")
    device = resolve_device(env.device)  # raises for "cuda" without CUDA
    need(run.precision == "fp32" or use_fast_path(env.fast, device),
         f"precision={run.precision!r} needs the fast path, which is off here (fast={env.fast!r} on "
         f"{device.type}); set fast='on' (mixed precision is never chosen silently on a CPU)")
    for name in ("run_dir", "checkpoint_dir"):
        if getattr(env, name):
            check_writable(name, Path(getattr(env, name)).expanduser())


def check_writable(name, folder: Path):
    existing = folder
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        raise ValueError(f"{name}={str(folder)!r} is not writable ({e}); choose another folder") from e
