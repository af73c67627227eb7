"""Benchmark: the my_utils loop against the fast path, in one process, on the same data and device.

    python3 -m nbutils bench [--device auto] [--steps 20] [--eval-images 2000] [--epochs 0]

Modes, measured in this order, in one process whose allocator is tuned first on a CPU
(:func:`~nbutils.fast.tune_cpu_allocator`, as notebook 04 does), so that every mode runs on the same heap:

* ``my_utils``   the 2020 loop as the coursework ran it: DataLoader with per-sample transforms and
                 my_utils' 4 workers, ``float(l)`` per batch, then ``evaluate_accuracy`` and
                 ``evaluate_loss`` (two test passes, no ``no_grad``) for the scheduler;
* ``train_ch3``  this package's port: same DataLoader, device-side sums, one ``no_grad`` test pass;
* ``fast-fp32``  :mod:`nbutils.fast` in fp32 (CUDA graphs on a GPU);
* ``fast-tf32``, ``fast-bf16``  the mixed-precision modes; the best one is reported as such.

With ``--epochs 0`` an epoch is projected from ``--steps`` timed steps and ``--eval-images`` timed test
images; with ``--epochs N`` (GPU) the fast modes run and time the whole protocol for N epochs, and the
two DataLoader loops run ``--baseline-epochs`` full epochs (default 1: they cost minutes) whose mean is
projected to 30. On a CPU without bf16 instructions bf16 is emulated, about 20x slower than fp32, so
``fast-bf16`` times at most 3 steps and 500 test images there (a few minutes instead of ten). Each
mode's row is printed when it is measured, as the report's table shows it, and the JSON written to
``--out`` (default ``reports/bench/bench-<device>.json``). The tables of ``reports/bench/README.md`` are generated from
such files: a run that writes one rewrites its table, and ``--tables-only`` rewrites them all.
Every row also carries the GEMM floor of its precision, ``matmul_floor_ms_per_step`` (the step's
matrix products alone, timed in the same run), and a mixed-precision row its test accuracy against
fp32's after the same steps, ``acc_vs_fp32``. Every mode trains the model as notebook 02 writes it,
with torch's own modules; on a CPU, ``--cpu-kernels`` times the fast modes with
:mod:`nbutils.tools.cpu`'s kernels instead, to show what they would save.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import re
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from .. import data as nbdata
from ..data import N_TEST, N_TRAIN
from ..coursework import NeuralNetwork, build
from ..devices import resolve_device
from ..fast import (EVAL_BATCH_SIZE, PRECISIONS, FastTrainer, bf16_emulated, matmul_precision,
                    tune_cpu_allocator)
from ..io import atomic_write_json, atomic_write_text
from ..paths import checkout, reports_root
from ..params import resolve
from ..runs import hardware
from .cpu import cpu_kernels
from .stack import StackLoader, StackTrainer, StackedModel, StackedOptimizer
from ..train import evaluate, train_ch3, train_epoch_ch3

MODES = ("my_utils", "train_ch3", "fast-fp32", "fast-tf32", "fast-bf16")  # in the order they run


def mode_precision(mode):
    """The precision a mode trains in: "fast-bf16" -> "bf16"; the DataLoader loops train in fp32."""
    return mode.split("-")[1] if mode.startswith("fast") else "fp32"


# ----------------------------------------------------------------------------- the 2020 baseline
def my_utils_train_epoch(net, train_iter, loss, updater, device):
    """my_utils.train_epoch_ch3 with the coursework's ``.to(device)``: host syncs every batch."""
    net.train()
    total = correct = 0
    for X, y in train_iter:
        X, y = X.to(device), y.to(device)
        y_hat = net(X)
        l = loss(y_hat, y)
        updater.zero_grad()
        l.backward()
        updater.step()
        total += float(l.detach()) * len(y)
        correct += float((y_hat.argmax(dim=1) == y).sum())
    return total / len(train_iter.dataset), correct / len(train_iter.dataset)


def my_utils_evaluate(net, test_iter, loss, device):
    """my_utils.evaluate_accuracy then evaluate_loss: two passes, gradients recorded, a host sync
    per batch."""
    net.eval()
    n = len(test_iter.dataset)
    correct = sum(float((net(X.to(device)).argmax(dim=1) == y.to(device)).sum()) for X, y in test_iter)
    total = sum(float(loss(net(X.to(device)), y.to(device)).detach()) * len(y) for X, y in test_iter)
    return total / n, correct / n


# What runs the epochs of each DataLoader mode, with FastTrainer's two methods, as train_ch3 takes them
LOOPS = {"my_utils": SimpleNamespace(train_epoch=my_utils_train_epoch, evaluate=my_utils_evaluate),
         "train_ch3": SimpleNamespace(train_epoch=train_epoch_ch3, evaluate=evaluate)}


# ----------------------------------------------------------------------------- one mode
def setup(device, seed=0):
    """The report's model, loss, optimizer and scheduler, seeded, as notebook 04 builds them. The fast
    path prepares the optimizer for CUDA graphs itself (:func:`nbutils.fast.prepare_for_graphs`)."""
    return build(resolve("seed", seed=seed, device=str(device))[0], device)


def loaders_and_trainer(mode, net, loss, opt, device, batch_size, **subsets):
    """A mode's train and test data, and what trains and evaluates it: an object with the
    ``train_epoch`` and ``evaluate`` methods of :class:`~nbutils.fast.FastTrainer`."""
    if mode.startswith("fast"):
        data = nbdata.load_data_fashion_mnist_device(
            batch_size, device, eval_batch_size=max(batch_size, EVAL_BATCH_SIZE), **subsets)
        return data, FastTrainer(net, loss, opt, device, mode_precision(mode))
    workers = 4 if mode == "my_utils" else None  # my_utils.get_dataloader_workers() returned 4
    data = nbdata.load_data_fashion_mnist(batch_size, num_workers=workers, normalize=True, **subsets)
    return data, LOOPS[mode]


def _timed(fn, device):
    """``fn()``'s wall time in seconds, the device's work included, and what it returned."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda device: None
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def measure(mode, root, device, steps, eval_images, epochs, batch_size=128, baseline_epochs=1,
            kernels=False):
    """Time one mode, seeded as the report (0); returns its row: ms_per_step, images_per_s, epoch_s,
    protocol_30_s, setup_s, measured and final_test_acc (:func:`run` adds those of :func:`compared`)."""
    fast = mode.startswith("fast")
    if epochs and not fast:
        epochs = min(epochs, baseline_epochs)
    emulated = not epochs and device.type == "cpu" and mode == "fast-bf16" and bf16_emulated()
    if emulated:  # enough to time a step of several seconds
        steps, eval_images = min(steps, 3), min(eval_images, 500)
    net, loss, opt, sched = setup(device)
    steps_per_epoch = math.ceil(N_TRAIN / batch_size)
    with cpu_kernels(net) if kernels and device.type == "cpu" and fast else contextlib.nullcontext():
        (train_iter, test_iter), trainer = loaders_and_trainer(
            mode, net, loss, opt, device, batch_size, root=root,
            train_subset=0 if epochs else steps * batch_size, test_subset=0 if epochs else eval_images)
        if epochs:  # the real protocol, end to end (capture included in the first epoch)
            seconds, history = _timed(lambda: train_ch3(net, train_iter, test_iter, loss, epochs, opt,
                                                        sched, device, trainer=trainer), device)
            epoch_s = seconds / epochs
            return dict(mode=mode, ms_per_step=1000 * epoch_s / steps_per_epoch,
                        images_per_s=N_TRAIN / epoch_s, epoch_s=epoch_s, protocol_30_s=30 * epoch_s,
                        setup_s=None, measured=f"{epochs} full epoch{'s' * (epochs > 1)}"
                        + ("" if fast else ", projected"), final_test_acc=history[-1]["test_acc"])

        # Projection: a warm-up epoch (graph capture, worker start-up) timed apart, then the timed epoch.
        setup_s, _ = _timed(lambda: trainer.train_epoch(net, train_iter, loss, opt, device), device)
        train_s, _ = _timed(lambda: trainer.train_epoch(net, train_iter, loss, opt, device), device)
        eval_s, (_, acc) = _timed(lambda: trainer.evaluate(net, test_iter, loss, device), device)
    # DataLoader workers start once per epoch: count that once, not once per `steps` steps.
    startup_s = 0.0 if fast else _timed(lambda: next(iter(train_iter)), device)[0]
    step_s = max(train_s - startup_s, 1e-9) / steps
    epoch_s = startup_s + step_s * steps_per_epoch + eval_s / eval_images * N_TEST
    return dict(mode=mode, ms_per_step=1000 * step_s, images_per_s=batch_size / step_s,
                epoch_s=epoch_s, protocol_30_s=30 * epoch_s + max(0.0, setup_s - train_s),
                setup_s=setup_s, measured=f"{steps} steps + {eval_images} test images, projected"
                + (" (bf16 emulated on this CPU)" if emulated else ""), final_test_acc=acc)


# ----------------------------------------------------------------------------- the floor
def step_gemms(batch_size):
    """``(rows, in, out)`` of each ``nn.Linear`` GEMM in a forward pass of the model at ``batch_size``."""
    net, shapes = NeuralNetwork().eval(), []
    for m in net.modules():  # a model of its own: its hooks go with it
        if isinstance(m, nn.Linear):
            m.register_forward_hook(lambda m, x, _: shapes.append(
                (x[0].numel() // m.in_features, m.in_features, m.out_features)))
    with torch.no_grad():
        net(torch.zeros(batch_size, 1, 28, 28))
    return shapes


def matmul_floor_ms(device, precision, batch_size, repeats=5):
    """What a training step's GEMMs alone take here, in ms: each Linear's forward, input-gradient and
    weight-gradient products as plain ``torch.mm`` on the step's own shapes, the best of ``repeats``.
    A step cannot run faster than this; the rest of its time is everything else."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    total = 0.0
    with matmul_precision(precision):
        for n, k, m in step_gemms(batch_size):
            for a, b in (((n, k), (k, m)), ((n, m), (m, k)), ((m, n), (n, k))):
                x, y = (torch.full(shape, 0.5, dtype=dtype, device=device) for shape in (a, b))
                total += min(_timed(lambda: torch.mm(x, y), device)[0] for _ in range(repeats))
    return 1000 * total


# ----------------------------------------------------------------------------- the command
def run(device="auto", steps=20, eval_images=2000, epochs=0, modes=None, out=None, root=None,
        batch_size=128, baseline_epochs=1, kernels=False):
    """Measure ``modes`` (default: every one this device has) and write their JSON to ``out``; each
    row is printed, as the report shows it, when it is measured (on a CPU a run takes minutes)."""
    check_counts(dict(steps=steps, eval_images=eval_images, epochs=epochs,
                      baseline_epochs=baseline_epochs, batch_size=batch_size))
    device = resolve_device(device)
    modes = _modes_for(device, modes or MODES)
    out, root = _begin(device, out, root, "bench", batch_size, _mode_rows)
    warnings.filterwarnings("ignore", message="This DataLoader will create 4 worker")  # my_utils' 4
    rows, floors = [], {}
    for mode in modes:
        row = measure(mode, root, device, steps, eval_images, epochs, batch_size,
                      baseline_epochs=baseline_epochs, kernels=kernels)
        rows.append(compared(row, rows, floors, device, batch_size))
        print(_mode_rows(rows)[-1], flush=True)
    mixed = [r for r in rows if r["mode"] in ("fast-tf32", "fast-bf16")]
    parameters = dict(batch_size=batch_size, steps=steps, eval_images=eval_images, epochs=epochs,
                      baseline_epochs=baseline_epochs if epochs else None, optimizer="adam", lr=1e-3,
                      weight_decay=5e-4, cpu_kernels=kernels and device.type == "cpu")
    best = min(mixed, key=lambda r: r["epoch_s"])["mode"] if mixed else None
    return _write(out, device, parameters, rows, best_mixed_precision=best)


def compared(row, rows, floors, device, batch_size):
    """``row`` with its speed-up over the first of ``rows`` (the rows before it), the GEMM floor of
    its precision (timed once, into ``floors``; None for emulated bf16, which would take minutes) and,
    for a mixed-precision row, its test accuracy against fp32's after the same steps."""
    precision = mode_precision(row["mode"])
    if precision not in floors and "emulated" not in row["measured"]:
        floors[precision] = matmul_floor_ms(device, precision, batch_size)
    fp32 = next((r for r in rows if r["mode"] == "fast-fp32"), None)
    same_steps = fp32 is not None and precision != "fp32" and row["measured"] == fp32["measured"]
    return dict(row, speedup_vs_my_utils=(rows or [row])[0]["epoch_s"] / row["epoch_s"],
                matmul_floor_ms_per_step=floors.get(precision),
                acc_vs_fp32=row["final_test_acc"] - fp32["final_test_acc"] if same_steps else None)


def check_counts(counts):
    """Refuse a count below its least, before minutes of measuring (0 epochs: project from steps)."""
    for name, value in counts.items():
        least = 0 if name == "epochs" else 1
        if min(value if isinstance(value, list) else [value], default=least - 1) < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")


def _modes_for(device, modes):
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"modes must be among {list(MODES)}, got {unknown}")
    # tf32 does not exist on a CPU (bf16 does, emulated where the CPU has no bf16 instructions)
    modes = [m for m in MODES if m in modes and not (device.type == "cpu" and m == "fast-tf32")]
    if not modes:
        raise ValueError("modes: fast-tf32 is a GPU mode; on a CPU choose among the others")
    return modes


def _begin(device, out, root, name, batch, table_rows):
    """A run's JSON file (default ``reports/bench/<name>-<device>.json``, refused now if a folder,
    not after minutes of measuring) and its data's folder; prints the header of its table."""
    out = Path(out) if out else reports_root() / "bench" / f"{name}-{device.type}.json"
    if out.is_dir():
        raise ValueError(f"out must be a JSON file's path, and {out} is a folder")
    root = nbdata.prepare_fashion_mnist(root)
    print(f"{hardware(device)} | torch {torch.__version__} | batch {batch}", *table_rows([]), sep="\n",
          flush=True)
    return out, root


def _write(out, device, parameters, rows, **extra):
    """The bench's JSON, written to ``out``; the report's table of ``out``, if it has one, rewritten."""
    result = dict(device=str(device), hardware=hardware(device), torch=torch.__version__,
                  cuda=torch.version.cuda if device.type == "cuda" else None, parameters=parameters,
                  **extra, created=time.strftime("%Y-%m-%d %H:%M:%S"), rows=rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    print(f"written: {out}")
    if REPORT.exists() and write_report_tables({out.resolve()}):  # never other numbers than its file
        print(f"updated: {REPORT}")
    return result


# ----------------------------------------------------------------------------- bench --stack
def run_stacks(device, sizes, steps=20, precision="fp32", batch_size=128, out=None, root=None):
    """For each K in ``sizes``, K runs of the report's protocol (seeds 0 to K-1, their own loaders)
    train as one :class:`~nbutils.tools.stack.StackedModel` on the fast path (CUDA graphs on a GPU):
    an epoch of ``steps`` batches to warm up (and capture), then the timed one. A row gives the time
    of a stacked step, that time per run, and the images per second of all K runs together, each
    against K = 1; it is printed as it comes, and the JSON written to ``out``."""
    check_counts({"stack sizes": list(sizes), "steps": steps, "batch_size": batch_size})
    device = resolve_device(device)
    out, root = _begin(device, out, root, "stack", f"{batch_size} | {precision}", _stack_rows)
    rows = []
    for size in sizes:
        step_s = stacked_step_s(size, device, steps, precision, batch_size, root)
        one = rows[0]["ms_per_step"] / 1000 if rows and rows[0]["runs"] == 1 else None
        rows.append(dict(runs=size, ms_per_step=1000 * step_s, ms_per_run_step=1000 * step_s / size,
                         images_per_s=size * batch_size / step_s, time_vs_one=step_s / one if one else None,
                         throughput_vs_one=size * one / step_s if one else None))
        print(_stack_rows(rows)[-1], flush=True)
    parameters = dict(batch_size=batch_size, steps=steps, precision=precision, sizes=list(sizes))
    return _write(out, device, parameters, rows, kind="stack")


def stacked_step_s(size, device, steps, precision, batch_size, root):
    """The time of one stacked step of ``size`` runs, in seconds."""
    model = StackedModel([setup(device, seed)[0] for seed in range(size)]).to(device)
    loader = StackLoader([nbdata.load_data_fashion_mnist_device(
        batch_size, device, root=root, train_subset=batch_size * steps, test_subset=100, seed=seed,
        drop_last=True)[0] for seed in range(size)])
    optimizer = StackedOptimizer(model.parameters(), "adam", [1e-3] * size, [5e-4] * size, device=device)
    trainer = StackTrainer(model, nn.CrossEntropyLoss(reduction="none"), optimizer, device, precision)
    trainer.train_members(loader)  # warm-up: the first, eager update, and the graph's capture
    return _timed(lambda: trainer.train_members(loader), device)[0] / steps


# ----------------------------------------------------------------------------- reports/bench/README.md
REPO = checkout() or Path.cwd()  # the paths in the report's tables are relative to the checkout
REPORT = REPO / "reports" / "bench" / "README.md"
# The report's speed tables are generated: each stands between these two lines, the first naming its
# JSON file (relative to the repository), and is rewritten from it by every run that writes the file.
TABLE = re.compile(r"^(<!-- bench table: (?P<path>\S+) -->\n).*?^(<!-- end of bench table -->)$", re.S | re.M)


def report_tables():
    """The JSON files that the report's bench tables are generated from."""
    return [m["path"] for m in TABLE.finditer(REPORT.read_text())]


def render_tables(text, only=None):
    """``text`` with every bench table block (or those of the files in ``only``) rendered again from
    the JSON file it names."""
    def table(m):
        if only is not None and (REPO / m["path"]).resolve() not in only:
            return m[0]
        if not (REPO / m["path"]).is_file():
            raise ValueError(f"a bench table in {REPORT} names {m['path']}, which is not a file")
        result = json.loads((REPO / m["path"]).read_text())
        return m[1] + markdown_table(result, m["path"]) + "\n" + m[3]  # a blank line ends the table
    return TABLE.sub(table, text)


def write_report_tables(only=None):
    """The report's tables (those of the JSON files in ``only``) rendered again from their files;
    returns whether any changed."""
    if not REPORT.exists():  # an installed package, run outside the checkout
        raise ValueError(f"--tables-only rewrites the tables of the checkout's reports/bench/README.md, "
                         f"and there is none at {REPORT}; run it in a clone of the repository")
    text = REPORT.read_text()
    rendered = render_tables(text, only)
    if rendered != text:
        atomic_write_text(REPORT, rendered)
    return rendered != text


def markdown_table(result, path):
    """A bench JSON as the report shows it: what it was measured on, the command that measures it
    again, and a row per mode (per stack size, for ``bench --stack``)."""
    p, stack = result["parameters"], result.get("kind") == "stack"
    cuda = f", CUDA {result['cuda']}" if result.get("cuda") else ""
    batch = f"{p['batch_size']} per run, {p['precision']}, {p['steps']} timed steps" if stack \
        else p["batch_size"]
    return "\n".join([f"`{path}`: {result['hardware']}, torch {result['torch']}{cuda}, batch {batch}, "
                      f"{result['created'][:16]}. Rerun: `{rerun_command(result, path)}`", "",
                      *(_stack_rows if stack else _mode_rows)(result["rows"])]) + "\n"


def _mode_rows(rows):
    lines = ["| mode | ms/step | GEMM floor | images/s | s/epoch | 30 epochs | vs my_utils | test acc "
             "| measured |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        floor = r.get("matmul_floor_ms_per_step")
        delta = "" if r.get("acc_vs_fp32") is None else f" ({100 * r['acc_vs_fp32']:+.2f} vs fp32)"
        lines.append(f"| {r['mode']} | {_figure(r['ms_per_step'], 1)} | "
                     f"{'–' if floor is None else _figure(floor, 1)} | {r['images_per_s']:,.0f} | "
                     f"{_figure(r['epoch_s'], 2)} | {_duration(r['protocol_30_s'])} | "
                     f"{r['speedup_vs_my_utils']:.2f}× | {100 * r['final_test_acc']:.2f} %{delta} | "
                     f"{r['measured']} |")
    return lines


def _stack_rows(rows):
    return ["| runs stacked | ms/step | ms per run-step | images/s | time vs 1 run | throughput vs 1 |",
            "|---|---|---|---|---|---|"] + [
        f"| {r['runs']} | {r['ms_per_step']:.2f} | {r['ms_per_run_step']:.2f} | {r['images_per_s']:,.0f} "
        f"| {_ratio(r['time_vs_one'])} | {_ratio(r['throughput_vs_one'])} |" for r in rows]


def rerun_command(result, path):
    """The bench command line that wrote ``result`` to ``path``: every option off its default."""
    p, stack = result["parameters"], result.get("kind") == "stack"
    defaults = inspect.signature(run_stacks if stack else run).parameters
    device = torch.device(result["device"])
    args = ["python3 -m nbutils bench", f"--device {device}"]
    shown = ("epochs", "baseline_epochs") if p.get("epochs") else ("steps", "eval_images")
    if stack:  # its sizes and steps always shown, and its file
        args.append(f"--stack {','.join(map(str, p['sizes']))} --steps {p['steps']}")
        shown = ("precision",)
    args += [f"--{name.replace('_', '-')} {p[name]}" for name in shown + ("batch_size",)
             if p.get(name) is not None and p[name] != defaults[name].default]
    modes = [] if stack else [r["mode"] for r in result["rows"]]
    if modes and modes != _modes_for(device, MODES):
        args.append(f"--modes {','.join(modes)}")
    if p.get("cpu_kernels"):
        args.append("--cpu-kernels")
    if stack or Path(path).name != f"bench-{device.type}.json":
        args.append(f"--out {path}")
    return " ".join(args)


def _figure(x, decimals):
    return f"{x:,.0f}" if x >= 100 else f"{x:.{decimals}f}"


def _ratio(x):
    return "–" if x is None else f"{x:.2f}×"


def _duration(seconds):
    if seconds < 600:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 36_000 else f"{seconds / 3600:.0f} h"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m nbutils bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (the GPU if any), cpu, cuda or cuda:N")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps of a mode or stack")
    parser.add_argument("--eval-images", type=int, default=2000, help="timed test images of a mode")
    parser.add_argument("--epochs", type=int, default=0, help="0: project from --steps; N: time N epochs")
    parser.add_argument("--baseline-epochs", type=int, default=1, help="DataLoader loops' epochs, if fewer")
    parser.add_argument("--modes", default="", help="comma-separated subset of the modes")
    parser.add_argument("--batch-size", type=int, default=128, help="(default: 128, the report's)")
    parser.add_argument("--out", help="the JSON file (default: reports/bench/bench-<device>.json)")
    parser.add_argument("--cpu-kernels", action="store_true", help="on a CPU, with cpu.py's kernels")
    parser.add_argument("--stack", type=stack_sizes, metavar="K,K,...", help="time stacks of K runs instead")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="of the stacks")
    parser.add_argument("--tables-only", action="store_true", help="rewrite the report's tables only")
    args = parser.parse_args(argv)
    try:
        if args.tables_only:
            write_report_tables()
            print(f"written: {REPORT} (tables from {', '.join(report_tables())})")
            return
        tune_cpu_allocator(args.device)  # process-wide: once, before anything is timed
        if args.stack is not None:
            run_stacks(args.device, args.stack, args.steps, args.precision, args.batch_size, args.out)
            return
        run(args.device, args.steps, args.eval_images, args.epochs,
            [m for m in args.modes.split(",") if m] or None, args.out, batch_size=args.batch_size,
            baseline_epochs=args.baseline_epochs, kernels=args.cpu_kernels)
    except ValueError as e:  # a bad argument, or a missing or corrupt dataset: the message says which
        parser.error(str(e))


def stack_sizes(text):
    """``--stack 1,4,8``: the sizes of the stacks to time (argparse names the option it refuses)."""
    return [int(k) for k in text.split(",") if k]


if __name__ == "__main__":
    main()
