"""From validated parameters to a trained model in a run folder: what notebooks 04 and 05 call.

A run folder holds everything a run produced: ``params.json``, ``checkpoint.pt`` (every epoch),
``model.pt``, ``history.csv``/``history.json``, ``metrics.json``, ``figures/*.png`` and, when the
papermill runner made it, the executed notebooks and ``status.json``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from . import data as nbdata
from .checkpoint import CHECKPOINT, load_checkpoint, restore_checkpoint, save_checkpoint
from .fast import EVAL_BATCH_SIZE, make_fast_optimizer, train_fast
from .io import atomic_torch_save, atomic_write_json, atomic_write_text
from .model import NeuralNetwork, init_weights
from .params import Params, resolve
from .train import (History, make_optimizer, make_scheduler, resolve_device,
                    seed_everything, train_ch3, training_animator)

__all__ = ["build", "environment", "fit_params", "hardware", "load_or_train", "load_trained",
           "make_loaders", "reports_root", "run_folder", "train", "use_fast", "write_history",
           "write_metrics"]

REPO = Path(__file__).resolve().parents[1]


def reports_root() -> Path:
    """``$NBUTILS_REPORTS``, else ``reports/`` of the repository, else ``~/nbutils-reports`` (Colab)."""
    if os.environ.get("NBUTILS_REPORTS"):
        return Path(os.environ["NBUTILS_REPORTS"]).expanduser()
    if (REPO / "pyproject.toml").exists():
        return REPO / "reports"
    return Path.home() / "nbutils-reports"


def run_folder(params: Params) -> Path:
    """The run folder (created): ``run_dir``, else ``<reports>/interactive-<profile>``."""
    folder = Path(params.run_dir).expanduser() if params.run_dir else \
        reports_root() / f"interactive-{params.profile}"
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    return folder


def checkpoint_path(params: Params, folder: Path) -> Path:
    directory = Path(params.checkpoint_dir).expanduser() if params.checkpoint_dir else folder
    directory.mkdir(parents=True, exist_ok=True)
    return directory / CHECKPOINT


def use_fast(params: Params) -> bool:
    """The fast path: when asked for ("on", or "eager": its data and loop without CUDA graphs), or by
    default on CUDA."""
    return params.fast in ("on", "eager") or (params.fast == "auto" and
                                              resolve_device(params.device).type == "cuda")


def warn_if_slow(params: Params, runs=1, epochs=None):
    """Say so before full-size training starts on a CPU: hours per run, not seconds. ``epochs``: those
    still to train (a resumed run), default all of them."""
    epochs = params.epochs if epochs is None else epochs
    full_size = params.train_subset in (0, 60_000)
    if not runs or not epochs or not full_size or resolve_device(params.device).type != "cpu":
        return
    # Per full epoch on 2 cores, within what the benchmark measured on this noisy host (reports/bench/,
    # 2026-11-27 evening): the fast path 5.1 to 6.6 min, the my_utils loop 7.9 to 10.4.
    minutes = (5.5 if use_fast(params) else 8.5) * epochs * runs
    print(f"note: no GPU here; {runs} full-size run{'s' * (runs > 1)} of {epochs} epochs: "
          f"about {minutes / 60:.1f} h on 2 CPU cores. The smoke profile (`--profile smoke`; in a "
          f"notebook, profile = \"smoke\") checks the pipeline in minutes.", flush=True)


def make_loaders(params: Params, val_size=0):
    """``(train_iter, test_iter)``: GPU-resident for the fast path, my_utils' DataLoaders otherwise;
    with ``val_size``, ``(train_iter, val_iter, test_iter)`` (the honest protocol)."""
    device = resolve_device(params.device)
    kw = dict(root=params.data_root or None, train_subset=params.train_subset,
              test_subset=params.test_subset, seed=params.seed, val_size=val_size)
    if use_fast(params):
        return nbdata.load_data_fashion_mnist_device(
            params.batch_size, device, eval_batch_size=max(params.batch_size, EVAL_BATCH_SIZE), **kw)
    return nbdata.load_data_fashion_mnist(params.batch_size, **kw)


def build(params: Params):
    """``(net, loss, optimizer, scheduler)`` as the report builds them, seeded by ``params.seed``."""
    device = resolve_device(params.device)
    seed_everything(params.seed)
    net = init_weights(NeuralNetwork(params.patch_size), params.init).to(device)
    if use_fast(params):
        optimizer = make_fast_optimizer(net.parameters(), params.optimizer, params.lr,
                                        params.weight_decay, device)
    else:
        optimizer = make_optimizer(net.parameters(), params.optimizer, params.lr, params.weight_decay)
    return net, nn.CrossEntropyLoss(), optimizer, make_scheduler(optimizer, params.patience)


def fit_params(params: Params, net, train_iter, test_iter, loss, optimizer, **kw):
    """Train ``params.epochs`` epochs with the loop ``params`` choose: the fast path (without CUDA
    graphs for ``fast="eager"``) or the my_utils loop. ``kw`` goes to ``train_fast``/``train_ch3``."""
    if use_fast(params):
        return train_fast(net, train_iter, test_iter, loss, params.epochs, optimizer,
                          precision=params.precision,
                          graphs=False if params.fast == "eager" else None, **kw)
    return train_ch3(net, train_iter, test_iter, loss, params.epochs, optimizer, **kw)


def _archive_previous(folder: Path, ckpt: Path):
    """``resume=False``: move the old run's results aside (never delete them)."""
    names = ("model.pt", "history.csv", "history.json", "metrics.json", "params.json", "figures")
    old = [p for p in (ckpt, *(folder / n for n in names)) if p.exists()]
    if not any(p.name != "params.json" and p.name != "figures" for p in old):
        return None
    archive = folder / "previous" / time.strftime("%Y%m%d-%H%M%S")
    archive.mkdir(parents=True)
    for p in old:
        p.rename(archive / p.name)
    (folder / "figures").mkdir()
    return archive


def train(params: Params, animator=None, log=print):
    """Notebook 04's training: resume if a matching checkpoint exists, checkpoint every epoch.

    Returns ``(net, history, folder)``. A non-finite loss raises :class:`TrainingDiverged`, leaving the
    last good epoch's checkpoint in place.
    """
    folder = run_folder(params)
    ckpt = checkpoint_path(params, folder)
    train_iter, test_iter = make_loaders(params)
    net, loss, optimizer, scheduler = build(params)
    history = []
    if not params.resume:
        archived = _archive_previous(folder, ckpt)
        if archived:
            log(f"resume=False: the previous results were moved to {archived}")
    else:
        state = load_checkpoint(ckpt, params.training_dict())
        if state is not None:
            history = restore_checkpoint(state, net, optimizer, scheduler, train_iter.generator)
            log(f"resuming from {ckpt} after epoch {len(history)} of {params.epochs}")

    atomic_write_json(folder / "params.json", params.as_dict())

    def on_epoch_end(hist):
        save_checkpoint(ckpt, net, optimizer, scheduler, hist, params.training_dict(),
                        train_iter.generator)
        write_history(folder, hist)

    if animator is None:
        animator = training_animator(params.epochs, live=None if params.live_plot else False)
    for record in history:  # a resumed run's plot starts with the epochs already done
        animator.add(record["epoch"], (record["train_loss"], record["train_acc"], record["test_acc"]))
        animator.add(record["epoch"], record["lr"], axis=1)
    device = resolve_device(params.device)
    if len(history) < params.epochs:
        warn_if_slow(params, epochs=params.epochs - len(history))  # e.g. Colab without a GPU runtime
        kw = dict(scheduler=scheduler, device=device, animator=animator, on_epoch_end=on_epoch_end)
        history = fit_params(params, net, train_iter, test_iter, loss, optimizer, history=history,
                             **kw)
    history = History(history)
    animator.save(folder / "figures" / "training.png")  # fit() already showed the final frame
    atomic_torch_save({"model": net.state_dict(), "params": params.as_dict()}, folder / "model.pt")
    write_history(folder, history)
    return net, history, folder


def write_history(folder: Path, history):
    """``history.json`` and ``history.csv``, each written atomically."""
    atomic_write_json(folder / "history.json", list(history))
    buffer = io.StringIO()
    honest = any("val_acc" in r for r in history)
    writer = csv.DictWriter(buffer, fieldnames=History.VAL_FIELDS if honest else History.FIELDS)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(folder / "history.csv", buffer.getvalue())


def load_trained(folder: Path, device=None):
    """``(net, history, params dict)`` from a run folder's ``model.pt`` and ``history.json``, or None."""
    folder = Path(folder)
    if not ((folder / "model.pt").exists() and (folder / "history.json").exists()):
        return None
    saved = torch.load(folder / "model.pt", map_location="cpu", weights_only=False)
    net = NeuralNetwork(saved["params"]["patch_size"])
    net.load_state_dict(saved["model"])
    history = History(json.loads((folder / "history.json").read_text()))
    return net.to(resolve_device(device)), history, saved["params"]


def load_or_train(params: Params, folder: Path, log=print):
    """Notebook 05's model: the one notebook 04 trained into ``folder``. Without one it is trained
    now, so that the notebook opened alone still runs end to end: on a GPU the run itself (seconds
    on the fast path), on a CPU, where that takes hours, a smoke model in ``folder/smoke-fallback``,
    whose numbers mean nothing and never pose as the run's. Returns ``(net, history, the folder its
    results belong in, its parameters)``."""
    trained = load_trained(folder, params.device)
    if trained is not None:
        net, history, _ = trained
        return net, history, Path(folder), params
    if resolve_device(params.device).type == "cuda":
        log(f"No trained model in {folder}: training it now, as notebook 04 would (seconds on a GPU).")
        return (*train(params), params)
    log(f"No trained model in {folder}. Run notebook 04 first (or `python3 -m nbutils reproduce`).\n"
        "So that this notebook can still be read end to end, a smoke model is trained now: its numbers "
        "mean nothing.")
    smoke = resolve("smoke", device=params.device, data_root=params.data_root,
                    run_dir=str(Path(folder) / "smoke-fallback"), live_plot=False)
    return (*train(smoke), smoke)


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
    return f"{name} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def environment(device=None):
    device = resolve_device(device)
    return dict(torch=torch.__version__, python=platform.python_version(),
                platform=platform.platform(), device=str(device), device_name=hardware(device))


def write_metrics(folder: Path, params: dict, history, extra=None, device=None):
    """``metrics.json``: the headline numbers, the parameters and the environment that produced them."""
    best = History(history).best()
    metrics = dict(
        max_test_acc=best["test_acc"], max_epoch=best["epoch"],
        final_test_acc=history[-1]["test_acc"], epochs_run=len(history),
        train_seconds=sum(r["seconds"] for r in history),
        params=params, environment=environment(device), **(extra or {}))
    atomic_write_json(Path(folder) / "metrics.json", metrics)
    return metrics

