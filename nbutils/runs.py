"""A run: what it computes (:class:`Run`) and where it runs (:class:`Env`), its folder, where its
parameters, checkpoint, history, model and figures go, what they must match to be resumed, and its
loaders. Files (``params.json``, a sweep's specs) hold the two values as one flat dict
(:func:`as_dict`, :func:`from_dict`); :mod:`nbutils.params` makes and checks them.

A run folder holds ``params.json``, ``checkpoint.pt`` (every epoch), ``model.pt``,
``history.csv``/``history.json``, ``metrics.json`` (:mod:`nbutils.trained`), ``figures/*.png`` and,
when the papermill runner made it, the executed notebooks and ``status.json``. Nothing here imports
the coursework's code, which uses it (notebook 04's ``train_run``).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
import platform
import shutil
import time
from pathlib import Path

import torch

from .checkpoint import CHECKPOINT, Checkpoint, atomic_torch_save, mismatch, model_identity
from .data import load_data_fashion_mnist, load_data_fashion_mnist_device
from .devices import resolve_device, use_fast_path
from .fast import EVAL_BATCH_SIZE
from .io import atomic_write_json, atomic_write_text
from .paths import reports_root
from .train import History

__all__ = ["Env", "Run", "archive", "as_dict", "environment", "from_dict", "hardware", "headline",
           "make_loaders", "run_checkpoint", "run_folder", "run_identity", "save_run", "write_history"]

RESULTS = ("model.pt", "history.csv", "history.json", "metrics.json", CHECKPOINT)


@dataclasses.dataclass(frozen=True)
class Run:
    """What a run computes, so what its numbers mean. The defaults are the report's protocol (the
    ``seed`` profile)."""
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
    precision: str = "fp32"    # "fp32", "tf32", "bf16" (autocast; the fast path only)
    profile: str = "seed"


@dataclasses.dataclass(frozen=True)
class Env:
    """Where a run trains, where its files go, and what it shows. None of it changes the numbers but
    the loop (``fast``), which a run's identity records as it ran (:func:`~nbutils.runs.run_identity`)."""
    device: str = "auto"       # "auto", "cpu", "cuda", "cuda:N"
    fast: str = "auto"         # "auto" (the fast path on CUDA), "on", "eager" (no graphs), "off" (my_utils)
    data_root: str = ""        # "": $NBUTILS_DATA or data/ at the repository root
    run_dir: str = ""          # "": reports/interactive-<profile>
    checkpoint_dir: str = ""   # "": the run folder (in Colab, point it at a mounted Drive)
    resume: bool = True        # continue from a checkpoint made with the same parameters
    live_plot: bool = True     # draw the live plot (only where a notebook frontend shows it)


FIELDS = {f.name: f for cls in (Run, Env) for f in dataclasses.fields(cls)}
RUN_FIELDS = {f.name for f in dataclasses.fields(Run)}
# What a run's checkpoint, model and sweep key must match: its values, the loop that ran them.
TRAINING_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "optimizer", "init", "patience", "seed",
                 "patch_size", "train_subset", "test_subset", "fast", "precision")


def as_dict(run: Run, env: Env) -> dict:
    """Both values as one flat dict: what ``params.json`` and a sweep's spec hold."""
    return dict(dataclasses.asdict(run), **dataclasses.asdict(env))


def from_dict(values: dict) -> tuple[Run, Env]:
    """``(run, env)`` from a flat dict such as ``params.json``; the names of neither are left out."""
    return (Run(**{k: v for k, v in values.items() if k in RUN_FIELDS}),
            Env(**{k: v for k, v in values.items() if k in FIELDS and k not in RUN_FIELDS}))


def run_folder(run: Run, env: Env) -> Path:
    """The run folder (created): ``run_dir``, else ``<reports>/interactive-<profile>``. With
    ``resume=False`` a previous run's results there are moved to ``previous/<time>/``, never deleted."""
    folder = Path(env.run_dir).expanduser() if env.run_dir else \
        reports_root() / f"interactive-{run.profile}"
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    if not env.resume and any((folder / name).exists() for name in RESULTS):
        print(f"resume=False: the previous results were moved to {archive(folder)}")
    return folder


def archive(folder, *extra) -> Path:
    """Move a run's results (and ``extra`` files, such as a checkpoint kept elsewhere) out of the
    way, to ``folder/previous/<time>/``; nothing is deleted. Returns that folder."""
    folder = Path(folder)
    into = folder / "previous" / time.strftime("%Y%m%d-%H%M%S")
    into.mkdir(parents=True, exist_ok=True)
    for path in [folder / name for name in RESULTS + ("params.json", "figures")] + list(extra):
        if Path(path).exists():
            shutil.move(str(path), str(into / Path(path).name))  # a Drive checkpoint_dir: another disk
    (folder / "figures").mkdir(exist_ok=True)
    return into


def run_identity(run: Run, env: Env, net) -> dict:
    """What a run's checkpoint and model must match: the parameters that change what training
    computes, and the model's code (:func:`~nbutils.checkpoint.model_identity`). ``fast`` is the loop
    that runs, not the word asked for: "auto" is the fast path on a GPU and my_utils' loop on a CPU,
    so a run the one began is never continued by the other."""
    values = dict(dataclasses.asdict(run), fast=use_fast_path(env.fast, resolve_device(env.device)))
    return dict({k: values[k] for k in TRAINING_KEYS}, **model_identity(net))


def run_checkpoint(folder, run: Run, env: Env, net, log=print) -> Checkpoint:
    """The checkpoint of the run in ``folder`` (kept in ``checkpoint_dir`` if one is given), for
    ``train_ch3(checkpoint=...)``. A checkpoint or model there made by other code or parameters is
    never resumed: the folder's results move to ``previous/``, this run starts over, and it says so."""
    folder = Path(folder)
    checkpoint = Checkpoint(Path(env.checkpoint_dir or folder) / CHECKPOINT,
                            run_identity(run, env, net), env.resume, log)
    why = checkpoint.mismatch() or trained_mismatch(folder, checkpoint.params)
    if why:
        moved = archive(folder, *[checkpoint.path] * (checkpoint.path.parent != folder))
        log(f"Not resuming: {folder} holds a run of other code or parameters ({why}). Its results "
            f"were moved to {moved}, and this run starts from epoch 1.")
    return checkpoint


def trained_mismatch(folder: Path, identity: dict) -> str:
    """How the model trained into ``folder`` differs from ``identity`` ("" if none is there)."""
    if not (folder / "model.pt").exists():
        return ""
    saved = torch.load(folder / "model.pt", map_location="cpu", weights_only=False)
    return mismatch(saved.get("identity", {}), identity)


def make_loaders(run: Run, data_root, device, fast=True):
    """``(train_iter, test_iter)`` of ``run``, from ``data_root`` ("": the default folder): for the
    fast path, held in ``device``'s memory (:class:`~nbutils.data.DeviceLoader`); for my_utils'
    loop, its DataLoaders."""
    kw = dict(root=data_root, train_subset=run.train_subset, test_subset=run.test_subset,
              seed=run.seed)
    if fast:
        return load_data_fashion_mnist_device(
            run.batch_size, device, eval_batch_size=max(run.batch_size, EVAL_BATCH_SIZE), **kw)
    return load_data_fashion_mnist(run.batch_size, normalize=True, **kw)


def save_run(folder, net, history, run: Run, env: Env, animator=None):
    """A trained run's ``model.pt``, ``history.json``/``.csv``, ``params.json`` and, with its
    animator, ``figures/training.png``: what notebook 05 reads back."""
    folder = Path(folder)
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"model": net.state_dict(), "params": as_dict(run, env),
                       "identity": run_identity(run, env, net)}, folder / "model.pt")
    atomic_write_json(folder / "params.json", as_dict(run, env))
    write_history(folder, history)
    if animator:
        animator.save(folder / "figures" / "training.png")


def write_history(folder: Path, history):
    """``history.json`` and ``history.csv``, each written atomically."""
    atomic_write_json(Path(folder) / "history.json", list(history))
    buffer = io.StringIO()
    honest = any("val_acc" in r for r in history)
    writer = csv.DictWriter(buffer, fieldnames=History.VAL_FIELDS if honest else History.FIELDS)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(Path(folder) / "history.csv", buffer.getvalue())


def hardware(device=None):
    """The GPU's name, or the CPU's model with its cores and torch's threads (what a time depends on)."""
    device = resolve_device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores, threads = os.cpu_count(), torch.get_num_threads()
    return f"{name} CPU, {cores} core{'s' * (cores > 1)}, {threads} thread{'s' * (threads > 1)}"


def environment(device=None):
    device = resolve_device(device)
    return dict(torch=torch.__version__, python=platform.python_version(),
                platform=platform.platform(), device=str(device), device_name=hardware(device))


def headline(history):
    """A run's numbers as the report gives them: max test accuracy (at which epoch) and final test
    accuracy, with the epochs run and the seconds they took. Every ``metrics.json`` starts with these."""
    best = History(history).best()
    return dict(max_test_acc=best["test_acc"], max_epoch=best["epoch"],
                final_test_acc=history[-1]["test_acc"], epochs_run=len(history),
                train_seconds=sum(r["seconds"] for r in history))
