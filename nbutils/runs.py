"""Run folders: where a run's parameters, history, model, metrics and figures go, and how to read
them back.

A run folder holds ``params.json``, ``checkpoint.pt`` (every epoch), ``model.pt``,
``history.csv``/``history.json``, ``metrics.json``, ``figures/*.png`` and, when the papermill runner
made it, the executed notebooks and ``status.json``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import shutil
import time
from pathlib import Path

import torch

from .checkpoint import CHECKPOINT, Checkpoint, CheckpointMismatch, atomic_torch_save, mismatch, \
    model_identity
from .coursework import NeuralNetwork, build
from .data import N_TEST, N_TRAIN, load_data_fashion_mnist, load_data_fashion_mnist_device
from .devices import resolve_device, use_fast_path
from .fast import EVAL_BATCH_SIZE, bf16_emulated, precision_context, tune_cpu_allocator
from .io import atomic_write_json, atomic_write_text
from .params import Params, describe, resolve
from .paths import reports_root
from .train import History, train_ch3

__all__ = ["archive", "environment", "hardware", "load_or_train", "load_trained", "make_loaders",
           "run_checkpoint", "run_folder", "run_identity", "save_run", "train_params", "warn_if_slow",
           "write_history", "write_metrics"]

RESULTS = ("model.pt", "history.csv", "history.json", "metrics.json", CHECKPOINT)


def run_folder(params: Params) -> Path:
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


def run_identity(params: Params, net) -> dict:
    """What a run's checkpoint and model must match: the parameters that change what training
    computes, and the model's code (:func:`~nbutils.checkpoint.model_identity`). ``fast`` is the loop
    that runs, not the word asked for: "auto" is the fast path on a GPU and my_utils' loop on a CPU,
    so a run the one began is never continued by the other."""
    ran = use_fast_path(params.fast, resolve_device(params.device))
    return dict(params.training_dict(), fast=ran, **model_identity(net))


def run_checkpoint(folder, params: Params, net, log=print) -> Checkpoint:
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


def warn_if_slow(params: Params, runs=1, epochs=None, step_seconds=None, bf16_seconds=None):
    """Say so before full-size training starts on a CPU: hours per run, not seconds. ``epochs``: those
    still to train, default all of them. The estimate is measured, not typed in: ``step_seconds``, by
    default one training step of the model timed here (about a second, the random state untouched).
    Where the CPU has bf16 instructions, an fp32 run is offered bf16, with its own step timed
    (``bf16_seconds``); it is never chosen for the user."""
    epochs = params.epochs if epochs is None else epochs
    full_size = params.train_subset in (0, N_TRAIN)
    if not runs or not epochs or not full_size or resolve_device(params.device).type != "cpu":
        return
    step_seconds = time_training_step(params) if step_seconds is None else step_seconds
    # An epoch: its training steps, then a test pass whose forward is one of a step's three GEMM
    # passes (forward, input and weight gradients).
    test_images = params.test_subset or N_TEST
    steps = math.ceil(N_TRAIN / params.batch_size) + test_images / params.batch_size / 3
    hours = steps * step_seconds * epochs * runs / 3600
    offer = ""
    if params.precision == "fp32" and (bf16_seconds or not bf16_emulated()):
        bf16_seconds = bf16_seconds or time_training_step(params, precision="bf16")
        offer = (f" This CPU has bf16 instructions: precision=\"bf16\" (with fast=\"on\") took "
                 f"{bf16_seconds:.2f} s a step, about {hours * bf16_seconds / step_seconds:.1f} h; "
                 f"reports/bench/README.md measures what it costs in accuracy.")
    print(f"note: no GPU here; {runs} full-size run{'s' * (runs > 1)} of {epochs} epochs: about "
          f"{hours:.1f} h on this CPU (a training step took {step_seconds:.2f} s here).{offer} The "
          f"smoke profile checks the pipeline in minutes: `python3 -m nbutils reproduce --profile "
          f"smoke`, or profile = \"smoke\" in a notebook.", flush=True)


def time_training_step(params: Params, repeats=2, precision=None):
    """Seconds of one training step of the run's model, optimizer and batch size on the CPU, on random
    images, in ``precision`` (default the run's): the best of ``repeats`` after a warm-up. The global
    random state is left as it was."""
    precision = precision or params.precision
    with torch.random.fork_rng(devices=[]):  # build() seeds the global generator
        net, loss, optimizer, _ = build(params, "cpu")
        X, y = torch.randn(params.batch_size, 1, 28, 28), torch.randint(0, 10, (params.batch_size,))
        seconds = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            optimizer.zero_grad()
            with precision_context(precision, torch.device("cpu")):
                batch_loss = loss(net(X), y)
            batch_loss.backward()
            optimizer.step()
            seconds.append(time.perf_counter() - start)
    return min(seconds[1:])


def make_loaders(params: Params, device, fast=True):
    """``(train_iter, test_iter)`` for ``params``: for the fast path, held in ``device``'s memory
    (:class:`~nbutils.data.DeviceLoader`); for my_utils' loop, its DataLoaders."""
    kw = dict(root=params.data_root, train_subset=params.train_subset,
              test_subset=params.test_subset, seed=params.seed)
    if fast:
        return load_data_fashion_mnist_device(
            params.batch_size, device, eval_batch_size=max(params.batch_size, EVAL_BATCH_SIZE), **kw)
    return load_data_fashion_mnist(params.batch_size, normalize=True, **kw)


def train_params(params: Params, folder=None, animator=False, progress=False, scheduler="plateau",
                 loaders=None, on_epoch_end=None):
    """Notebook 04's training as one call, for notebook 05 opened alone, the sweep and the tests:
    its loaders, its :func:`~nbutils.coursework.build` and its ``train_ch3`` call (with a
    checkpoint in ``folder``, where given: :func:`run_checkpoint`). A test holds it to what
    notebook 04 computes.

    ``scheduler``: "plateau" (the report's), None, or a function of the optimizer that makes one;
    ``loaders``: ``(train, val, test)`` and ``on_epoch_end(net, history)``: the honest protocol's
    (the sweep's). Returns ``(net, history, loss, test_iter)``.
    """
    device = resolve_device(params.device)
    tune_cpu_allocator(device)
    fast = use_fast_path(params.fast, device)
    train_iter, *val_iter, test_iter = loaders or make_loaders(params, device, fast)
    net, loss, optimizer, plateau = build(params, device)
    if scheduler != "plateau":
        plateau = scheduler(optimizer) if scheduler else None
    checkpoint = run_checkpoint(folder, params, net) if folder else None
    history = train_ch3(net, train_iter, test_iter, loss, params.epochs, optimizer, plateau, device,
                        animator=animator, fast=fast, precision=params.precision,
                        graphs=False if params.fast == "eager" else None, checkpoint=checkpoint,
                        progress=progress, val_iter=val_iter[0] if val_iter else None,
                        on_epoch_end=on_epoch_end)
    return net, history, loss, test_iter


def save_run(folder, net, history, params: Params, animator=None):
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


def load_trained(folder, device=None):
    """``(net, history, params)`` of the model trained into ``folder``, or None if there is none."""
    folder = Path(folder)
    if not ((folder / "model.pt").exists() and (folder / "history.json").exists()):
        return None
    saved = torch.load(folder / "model.pt", map_location="cpu", weights_only=False)
    params = Params(**saved["params"])
    net = NeuralNetwork(params.patch_size)
    why = mismatch(saved.get("identity", {}), model_identity(net))  # whatever loop trained it
    if why:
        raise CheckpointMismatch(f"{folder / 'model.pt'} was trained by other code ({why}); run "
                                 f"notebook 04 again to train the code as it is now")
    net.load_state_dict(saved["model"])
    history = History(json.loads((folder / "history.json").read_text()))
    return net.to(resolve_device(device)), history, params


def load_or_train(params: Params, folder, log=print):
    """Notebook 05's model: the one notebook 04 trained into ``folder``, with the parameters it was
    trained with. Without one it is trained now, so that the notebook opened alone still runs end to
    end: on a GPU the run itself (seconds on the fast path), on a CPU, where that takes hours, a smoke
    model in ``folder/smoke-fallback``. Returns ``(net, history, trained parameters, the folder
    its results belong in)``."""
    trained = load_trained(folder, params.device)
    if trained is not None:
        log(f"The model notebook 04 trained in {folder}, with its own parameters (params.json).")
        return (*trained, Path(folder))
    if resolve_device(params.device).type == "cuda":
        log(f"No trained model in {folder}: training it now, as notebook 04 would (seconds on a GPU).")
    else:
        log(f"No trained model in {folder}. Run notebook 04 first (or `python3 -m nbutils "
            f"reproduce`). So that this notebook still runs end to end, a smoke model is trained now.")
        params = resolve("smoke", device=params.device, data_root=params.data_root,
                         run_dir=str(Path(folder) / "smoke-fallback"), live_plot=False)
        folder = run_folder(params)
    net, history, _, _ = train_params(params, folder)
    save_run(folder, net, history, params)
    return net, History(history), params, Path(folder)


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


def write_metrics(folder, history, extra=None):
    """``metrics.json``: the headline numbers, beside the parameters and the code of the model they
    measure (the run folder's own ``params.json`` and ``model.pt``, whatever the caller's profile)
    and the environment."""
    folder = Path(folder)
    params = json.loads((folder / "params.json").read_text())
    identity = torch.load(folder / "model.pt", map_location="cpu", weights_only=False)["identity"]
    metrics = dict(
        headline(history), summary=describe(Params(**params)), params=params,
        code={k: identity[k] for k in ("code", "model", "model_code")},
        environment=environment(params["device"]), **(extra or {}))
    atomic_write_json(folder / "metrics.json", metrics)
    return metrics
