"""Run folders: where a run's parameters, checkpoint, history, model and figures go, what they must
match to be resumed, and the loaders of a run.

A run folder holds ``params.json``, ``checkpoint.pt`` (every epoch), ``model.pt``,
``history.csv``/``history.json``, ``metrics.json`` (:mod:`nbutils.trained`), ``figures/*.png`` and,
when the papermill runner made it, the executed notebooks and ``status.json``. Nothing here imports
the coursework's code, which uses it (notebook 04's ``train_run``).
"""
from __future__ import annotations

import csv
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

__all__ = ["archive", "environment", "hardware", "headline", "make_loaders", "run_checkpoint",
           "run_folder", "run_identity", "save_run", "write_history"]

RESULTS = ("model.pt", "history.csv", "history.json", "metrics.json", CHECKPOINT)


def run_folder(params) -> Path:
    """The run folder (created): ``run_dir``, else ``<reports>/interactive-<profile>``. With
    ``resume=False`` a previous run's results there are moved to ``previous/<time>/``, never deleted."""
    folder = Path(params.run_dir).expanduser() if params.run_dir else \
        reports_root() / f"interactive-{params.profile}"
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    if not params.resume and any((folder / name).exists() for name in RESULTS):
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


def run_identity(params, net) -> dict:
    """What a run's checkpoint and model must match: the parameters that change what training
    computes, and the model's code (:func:`~nbutils.checkpoint.model_identity`). ``fast`` is the loop
    that runs, not the word asked for: "auto" is the fast path on a GPU and my_utils' loop on a CPU,
    so a run the one began is never continued by the other."""
    ran = use_fast_path(params.fast, resolve_device(params.device))
    return dict(params.training_dict(), fast=ran, **model_identity(net))


def run_checkpoint(folder, params, net, log=print) -> Checkpoint:
    """The checkpoint of the run in ``folder`` (kept in ``checkpoint_dir`` if one is given), for
    ``train_ch3(checkpoint=...)``. A checkpoint or model there made by other code or parameters is
    never resumed: the folder's results move to ``previous/``, this run starts over, and it says so."""
    folder = Path(folder)
    checkpoint = Checkpoint(Path(params.checkpoint_dir or folder) / CHECKPOINT,
                            run_identity(params, net), params.resume, log)
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


def make_loaders(params, device, fast=True):
    """``(train_iter, test_iter)`` for ``params``: for the fast path, held in ``device``'s memory
    (:class:`~nbutils.data.DeviceLoader`); for my_utils' loop, its DataLoaders."""
    kw = dict(root=params.data_root, train_subset=params.train_subset,
              test_subset=params.test_subset, seed=params.seed)
    if fast:
        return load_data_fashion_mnist_device(
            params.batch_size, device, eval_batch_size=max(params.batch_size, EVAL_BATCH_SIZE), **kw)
    return load_data_fashion_mnist(params.batch_size, normalize=True, **kw)


def save_run(folder, net, history, params, animator=None):
    """A trained run's ``model.pt``, ``history.json``/``.csv``, ``params.json`` and, with its
    animator, ``figures/training.png``: what notebook 05 reads back."""
    folder = Path(folder)
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"model": net.state_dict(), "params": params.as_dict(),
                       "identity": run_identity(params, net)}, folder / "model.pt")
    atomic_write_json(folder / "params.json", params.as_dict())
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
