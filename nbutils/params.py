"""Run parameters: the profiles, and one validation that every entry point shares.

A notebook's ``parameters`` cell holds plain literals (papermill overrides them); the next cell calls
:func:`from_namespace`. A value given (typed into the cell, or by papermill) always holds; ``None``
takes the profile's value, and the report's default where the profile says nothing. Every value is
checked before any expensive work, with a message naming the parameter and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from pathlib import Path

import yaml

from .coursework import INITS, OPTIMIZERS
from .data import N_TEST, N_TRAIN
from .devices import resolve_device, use_fast_path
from .fast import PRECISIONS
from .saved import check_fresh

__all__ = ["PROFILES", "Params", "TRAINING_KEYS", "describe", "from_namespace", "load_profile",
           "resolve"]

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
PROFILES = tuple(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))


@dataclasses.dataclass(frozen=True)
class Params:
    """Everything a run depends on. The defaults are the report's protocol (the ``seed`` profile)."""
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.001
    weight_decay: float = 0.0005
    optimizer: str = "adam"
    init: str = "kaiming_uniform"
    patience: int = 15
    seed: int = 0
    patch_size: int = 4
    train_subset: int = 0      # 0: all 60,000 training images
    test_subset: int = 0       # 0: all 10,000 test images
    device: str = "auto"       # "auto", "cpu", "cuda", "cuda:N"
    fast: str = "auto"         # "auto" (the fast path on CUDA), "on", "eager" (no graphs), "off" (my_utils)
    precision: str = "fp32"    # "fp32", "tf32", "bf16" (autocast); only fp32 is sensible on CPU
    data_root: str = ""        # "": $NBUTILS_DATA or data/ at the repository root
    run_dir: str = ""          # "": reports/interactive-<profile>
    checkpoint_dir: str = ""   # "": the run folder (in Colab, point it at a mounted Drive)
    resume: bool = True        # continue from a checkpoint made with the same parameters
    live_plot: bool = True     # draw the live plot (only where a notebook frontend shows it)
    profile: str = "seed"

    def as_dict(self):
        return dataclasses.asdict(self)

    def training_dict(self):
        """The parameters that change what training computes (a checkpoint must match them)."""
        return {k: getattr(self, k) for k in TRAINING_KEYS}


TRAINING_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "optimizer", "init", "patience", "seed",
                 "patch_size", "train_subset", "test_subset", "fast", "precision")
FIELDS = {f.name: f for f in dataclasses.fields(Params)}
DEFAULTS = Params().as_dict()
# Taken from the registries themselves, so a new optimizer or init is allowed here at once.
CHOICES = {"optimizer": tuple(OPTIMIZERS), "init": tuple(INITS), "fast": ("auto", "on", "eager", "off"),
           "precision": PRECISIONS}


def load_profile(name):
    """The YAML profile ``nbutils/profiles/<name>.yaml`` as a dict."""
    path = PROFILE_DIR / f"{name}.yaml"
    if name not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)}, got {name!r}")
    values = yaml.safe_load(path.read_text()) or {}
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"{path}: unknown parameter(s) {sorted(unknown)}")
    return values


def resolve(profile="", **given) -> Params:
    """Validated :class:`Params`: the ``given`` values, then the profile's for those given as None
    or not at all, then the report's defaults. ``profile`` "" means ``$NBUTILS_PROFILE`` or "seed"."""
    unknown = set(given) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)}; allowed: {sorted(FIELDS)}")
    profile = profile or os.environ.get("NBUTILS_PROFILE") or "seed"
    values = dict(DEFAULTS, **load_profile(profile), profile=profile)
    values.update({k: v for k, v in given.items() if v is not None})
    params = Params(**{name: coerce(name, value) for name, value in values.items()})
    check(params)
    return params


def from_namespace(namespace, log=print) -> Params:
    """:func:`resolve` from a notebook's globals (the parameters cell's names, whatever else is
    there), saying which values the profile filled in. A kernel still holding ``#@save`` code from
    before an edit stops here (:func:`~nbutils.saved.check_fresh`), before any work."""
    check_fresh()
    given = {k: namespace[k] for k in FIELDS if k in namespace and k != "profile"}
    params = resolve(namespace.get("profile", ""), **given)
    filled = {k: getattr(params, k) for k, v in given.items() if v is None}
    log(f"profile {params.profile!r}" + (": " + ", ".join(f"{k}={v!r}" for k, v in filled.items())
                                         + " from the profile" if filled else ""))
    return params


def describe(params) -> str:
    """One line on what a run trained: a smoke run is labelled as the pipeline check it is."""
    images = f"{params.train_subset or N_TRAIN:,} training images"
    tests = f"{params.test_subset or N_TEST:,} test images"
    what = (f"{params.epochs} epoch{'s' * (params.epochs != 1)} on {images} ({tests}), "
            f"{params.optimizer} lr {params.lr:g}, batch {params.batch_size}, seed {params.seed}")
    if params.profile == "smoke":
        return (f"smoke profile, a pipeline check: {what}. Its numbers only show that the code "
                f"runs; they mean nothing about the model.")
    return f"profile {params.profile!r}: {what}"


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


def check(p: Params):
    def need(ok, message):
        if not ok:
            raise ValueError(message)

    need(p.epochs >= 1, f"epochs must be >= 1, got {p.epochs}")
    need(p.batch_size >= 1, f"batch_size must be >= 1, got {p.batch_size}")
    need(math.isfinite(p.lr) and p.lr > 0, f"lr must be a finite number > 0, got {p.lr}")
    need(math.isfinite(p.weight_decay) and p.weight_decay >= 0,
         f"weight_decay must be a finite number >= 0, got {p.weight_decay}")
    need(p.patience >= 0, f"patience must be >= 0, got {p.patience}")
    need(p.seed >= 0, f"seed must be >= 0, got {p.seed}")
    need(0 <= p.train_subset <= N_TRAIN, f"train_subset must be 0 (all) to {N_TRAIN}, got {p.train_subset}")
    need(0 <= p.test_subset <= N_TEST, f"test_subset must be 0 (all) to {N_TEST}, got {p.test_subset}")
    need(p.patch_size >= 1 and 28 % p.patch_size == 0,
         f"patch_size must divide 28: one of [1, 2, 4, 7, 14, 28], got {p.patch_size}")
    for name, allowed in CHOICES.items():
        need(getattr(p, name) in allowed, f"{name} must be one of {list(allowed)}, got {getattr(p, name)!r}")
    device = resolve_device(p.device)  # raises for "cuda" without CUDA
    need(p.precision == "fp32" or use_fast_path(p.fast, device),
         f"precision={p.precision!r} needs the fast path, which is off here (fast={p.fast!r} on "
         f"{device.type}); set fast='on' (mixed precision is never chosen silently on a CPU)")
    for name in ("run_dir", "checkpoint_dir"):
        if getattr(p, name):
            check_writable(name, Path(getattr(p, name)).expanduser())


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
