"""Before full-size training on a CPU: how long it will take, measured here, and what bf16 would
cost where the CPU has bf16 instructions (never chosen for the user)."""
from __future__ import annotations

import math
import time

import torch

from .coursework import build
from .data import N_TEST, N_TRAIN
from .devices import resolve_device
from .fast import bf16_emulated, precision_context
from .runs import Run

__all__ = ["time_training_step", "warn_if_slow"]


def warn_if_slow(run: Run, device, runs=1, epochs=None, step_seconds=None, bf16_seconds=None):
    """Say so before full-size training of ``runs`` runs like ``run`` starts on ``device``, when that
    is a CPU: hours per run, not seconds. ``epochs``: those still to train, default all of them. The
    estimate is measured, not typed in: ``step_seconds``, by default one training step of the model
    timed here (about a second, the random state untouched).
    Where the CPU has bf16 instructions, an fp32 run is offered bf16, with its own step timed
    (``bf16_seconds``); it is never chosen for the user."""
    epochs = run.epochs if epochs is None else epochs
    full_size = run.train_subset in (0, N_TRAIN)
    if not runs or not epochs or not full_size or resolve_device(device).type != "cpu":
        return
    step_seconds = time_training_step(run) if step_seconds is None else step_seconds
    # An epoch: its training steps, then a test pass whose forward is one of a step's three GEMM
    # passes (forward, input and weight gradients).
    test_images = run.test_subset or N_TEST
    steps = math.ceil(N_TRAIN / run.batch_size) + test_images / run.batch_size / 3
    hours = steps * step_seconds * epochs * runs / 3600
    offer = ""
    if run.precision == "fp32" and (bf16_seconds or not bf16_emulated()):
        bf16_seconds = bf16_seconds or time_training_step(run, precision="bf16")
        offer = (f" This CPU has bf16 instructions: precision=\"bf16\" (with fast=\"on\") took "
                 f"{bf16_seconds:.2f} s a step, about {hours * bf16_seconds / step_seconds:.1f} h; "
                 f"reports/bench/README.md measures what it costs in accuracy.")
    print(f"note: no GPU here; {runs} full-size run{'s' * (runs > 1)} of {epochs} epochs: about "
          f"{hours:.1f} h on this CPU (a training step took {step_seconds:.2f} s here).{offer} The "
          f"smoke profile checks the pipeline in minutes: `python3 -m nbutils reproduce --profile "
          f"smoke`, or profile = \"smoke\" in a notebook.", flush=True)


def time_training_step(run: Run, repeats=2, precision=None):
    """Seconds of one training step of the run's model, optimizer and batch size on the CPU, on random
    images, in ``precision`` (default the run's): the best of ``repeats`` after a warm-up. The global
    random state is left as it was."""
    precision = precision or run.precision
    with torch.random.fork_rng(devices=[]):  # build() seeds the global generator
        net, loss, optimizer, _ = build(run, "cpu")
        X, y = torch.randn(run.batch_size, 1, 28, 28), torch.randint(0, 10, (run.batch_size,))
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
