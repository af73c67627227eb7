"""What a stack of K runs costs: ``python3 -m nbutils bench --stack 1,4,8,16``.

For each K, K runs of the report's protocol (seeds 0 to K-1, their own loaders) train as one
:class:`~nbutils.tools.stack.StackedModel` on the fast path (CUDA graphs on a GPU): one epoch of
``steps`` batches to warm up (and capture), then the timed one. A row gives the time of a stacked
step, that time per run, and the images per second of all K runs together, each against K = 1.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from .. import data as nbdata
from ..coursework import build
from ..params import resolve
from ..runs import hardware
from .stack import StackLoader, StackTrainer, StackedModel, StackedOptimizer

__all__ = ["FIELDS", "markdown_table", "measure", "rerun_command"]

FIELDS = ("runs", "ms_per_step", "ms_per_run_step", "images_per_s", "time_vs_one", "throughput_vs_one")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_one(size, device, steps, precision, batch_size, root):
    """The time of one stacked step of ``size`` runs, in seconds."""
    nets, optimizers, loaders = [], [], []
    for seed in range(size):
        params = resolve("seed", seed=seed, batch_size=batch_size, device=str(device))
        net, _, optimizer, _ = build(params, device)
        nets.append(net)
        optimizers.append(optimizer)
        loaders.append(nbdata.load_data_fashion_mnist_device(
            batch_size, device, root=root, train_subset=batch_size * steps, test_subset=100,
            seed=seed, drop_last=True)[0])
    model = StackedModel(nets).to(device)
    optimizer = StackedOptimizer(model.parameters(), "adam", [1e-3] * size, [5e-4] * size,
                                 device=device)
    trainer = StackTrainer(model, nn.CrossEntropyLoss(reduction="none"), optimizer, device,
                           precision)
    loader = StackLoader(loaders)
    trainer.train_members(loader)  # warm-up: the first, eager update, and the graph's capture
    sync(device)
    start = time.perf_counter()
    trainer.train_members(loader)
    sync(device)
    return (time.perf_counter() - start) / steps


def measure(sizes, device, steps=20, precision="fp32", batch_size=128, root=None, log=print):
    """Every stack size's row, printed as it comes; returns the bench's JSON as a dict."""
    root = nbdata.prepare_fashion_mnist(root)
    rows = []
    log(f"{hardware(device)} | torch {torch.__version__} | batch {batch_size} | {precision}\n"
        f"{'runs':>5} {'ms/step':>9} {'ms/run-step':>12} {'img/s':>9} {'time vs 1':>10} "
        f"{'throughput vs 1':>16}")
    for size in sizes:
        step_s = measure_one(size, device, steps, precision, batch_size, root)
        one = rows[0]["ms_per_step"] / 1000 if rows and rows[0]["runs"] == 1 else None
        row = dict(runs=size, ms_per_step=1000 * step_s, ms_per_run_step=1000 * step_s / size,
                   images_per_s=size * batch_size / step_s,
                   time_vs_one=step_s / one if one else None,
                   throughput_vs_one=size * one / step_s if one else None)
        rows.append(row)
        log(f"{size:>5} {row['ms_per_step']:>9.2f} {row['ms_per_run_step']:>12.2f} "
            f"{row['images_per_s']:>9,.0f} {_ratio(row['time_vs_one']):>10} "
            f"{_ratio(row['throughput_vs_one']):>16}")
    return dict(kind="stack", device=str(device), hardware=hardware(device), torch=torch.__version__,
                cuda=torch.version.cuda if device.type == "cuda" else None,
                parameters=dict(batch_size=batch_size, steps=steps, precision=precision,
                                sizes=list(sizes)),
                created=time.strftime("%Y-%m-%d %H:%M:%S"), rows=rows)


def _ratio(x):
    return "–" if x is None else f"{x:.2f}×"


def rerun_command(result, path):
    p = result["parameters"]
    args = ["python3 -m nbutils bench", f"--device {result['device']}",
            f"--stack {','.join(map(str, p['sizes']))}", f"--steps {p['steps']}"]
    if p["precision"] != "fp32":
        args.append(f"--precision {p['precision']}")
    if p["batch_size"] != 128:
        args.append(f"--batch-size {p['batch_size']}")
    return " ".join(args + [f"--out {path}"])


def markdown_table(result, path):
    """A stack bench JSON as reports/bench/README.md shows it."""
    p = result["parameters"]
    cuda = f", CUDA {result['cuda']}" if result.get("cuda") else ""
    lines = [f"`{path}`: {result['hardware']}, torch {result['torch']}{cuda}, batch {p['batch_size']} "
             f"per run, {p['precision']}, {p['steps']} timed steps, {result['created'][:16]}. "
             f"Rerun: `{rerun_command(result, path)}`", "",
             "| runs stacked | ms/step | ms per run-step | images/s | time vs 1 run | throughput vs 1 |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['runs']} | {r['ms_per_step']:.2f} | {r['ms_per_run_step']:.2f} | "
                     f"{r['images_per_s']:,.0f} | {_ratio(r['time_vs_one'])} | "
                     f"{_ratio(r['throughput_vs_one'])} |")
    return "\n".join(lines) + "\n"
