"""The coursework's claims as tables: a grid of runs over seeds, through the training code of notebook 04.

    python3 -m nbutils sweep [--claims all] [--seeds 0,1,2] [--profile seed] [--stack K]
                             [--precision fp32] [--max-runs N] [--jobs 1] [--tables-only]

A claim is a list of variants of the report's protocol; its first variant is the choice the report
made (:mod:`nbutils.tools.claims`). Every (variant, seed) is a run folder
``reports/ablations/runs/<variant>-s<seed>/`` (params, history, metrics), trained by the fast path
(CUDA graphs on a GPU) in this process: up to ``--stack`` runs of one shape at once as one stacked
model (:mod:`nbutils.tools.stack`; 8 by default on a GPU), or one after another, or ``--jobs``
processes at once on a CPU. Each run's folder is the same either way. Runs are found by what they
compute, not by their folder's name: a finished run serves every claim that needs it and is never
trained again, so an interrupted sweep resumes where it stopped; a stack killed mid-way resumes from
its checkpoint (``runs/../stacks/``). Then :mod:`nbutils.tools.ablations` gives every claim whose runs are complete a
table (mean ± std over seeds of the final and the best test accuracy, training time), a plot and a
verdict in ``reports/ablations/``; an incomplete claim gets no verdict, only its rows that have every
seed.

Two protocols. ``report``: the scheduler steps on the test loss and "max" is the best test epoch,
as in the coursework, so the test set chooses. ``honest``: 5,000 training images are held out
(stratified, one fixed draw); the scheduler steps on their loss, the epoch with the best validation
accuracy is selected, and the test set is evaluated once, on that model.

The ``epochs`` claim reads the 10-, 20-, ... epoch results off one run per seed of the longest
length: ReduceLROnPlateau does not depend on the planned number of epochs, so the first N epochs of
a long run *are* an N-epoch run.

The ``recipe`` claim is the stronger conv-free model of :mod:`nbutils.tools.recipe` under the honest
protocol, in bf16 autocast, then the same with one ingredient taken out per row.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

from ..coursework import NeuralNetwork, build, make_scheduler
from ..devices import resolve_device, use_fast_path
from ..estimate import warn_if_slow
from ..fast import tune_cpu_allocator
from ..io import atomic_write_json, atomic_write_text
from ..params import resolve
from ..paths import reports_root
from ..runs import as_dict, environment, from_dict, headline, make_loaders, write_history
from ..train import History, evaluate, train_ch3
from .ablations import stack_comparison, status_line, write_tables
from .claims import CLAIMS, SEEDS, finished_runs, plan, run_spec, spec_key, stack_groups
from .protocol import KeepBest, as_validation, honest_loaders
from .recipe import PatchMixer, RecipeTrainer, make_recipe, recipe_for
from .stack import stack_id, train_stack

__all__ = ["DEFAULT_STACK", "execute", "main", "make_cut_scheduler", "recipe_spec", "run_one",
           "run_stack"]

# Runs per stack by device: on a GPU a step of the patch MLP is bound by its kernels' latency, so
# runs that share each kernel cost little more than one (bench --stack measures it); a CPU is bound
# by arithmetic, and gains nothing.
DEFAULT_STACK = {"cuda": 8, "cpu": 1}


# ----------------------------------------------------------------------------- one run
def run_one(spec, animator=None):
    """Train one run folder (in this process) and write its params, history and metrics: the run
    built by :func:`member_of`, trained by ``train_ch3`` on the loop its ``fast`` asks for (the
    recipe's hooks in the fast path's step), under its protocol. ``animator``
    (:func:`~nbutils.plotting.training_animator`) plots it live, as in notebook 07."""
    device = resolve_device(spec["params"]["device"])
    m = member_of(spec, device)
    plan = m["recipe"] or m["run"]  # what sets the epochs and the precision
    net, eval_net, loss, optimizer = m["net"], m["eval_net"], m["test_loss"], m["optimizer"]
    trainer = RecipeTrainer(net, loss, optimizer, device, plan.precision, m["graphs"],
                            eval_net=eval_net, **m["hooks"]) if m["fast"] else None
    if m["validating"]:
        trainer = KeepBest(trainer, eval_net)
    history = train_ch3(net, m["train"], m["eval"], loss, plan.epochs, optimizer,
                        m["scheduler"](optimizer) if m["scheduler"] else None, device, animator, trainer)
    if m["validating"]:
        history = History(as_validation(r) for r in history)
    return finish_run(spec, m["run"], m["env"], history,
                      dataclasses.asdict(m["recipe"]) if m["recipe"] else None,
                      test_once(m, trainer.best) if m["validating"] else None)


def test_once(member, best):
    """The honest protocol's one look at the test set, on the weights of the epoch chosen on
    validation: ``(best, (test loss, test acc))``."""
    net = member["architecture"]().to(member["device"])
    net.load_state_dict(best["state"])
    return best, evaluate(net, member["test"], member["test_loss"])


def finish_run(spec, run, env, history, recipe=None, tested=None, stack=1):
    """A trained run's metrics (``tested``: the honest protocol's ``(best, (test loss, test acc))``),
    written into its folder with its params and history; returns the metrics. metrics.json is
    written last: its presence means "finished"."""
    params = as_dict(run, env)
    metrics = dict(headline(history), label=spec["label"], seed=run.seed, protocol=spec["protocol"],
                   scheduler=spec["scheduler"], ingredient=spec["recipe"], jobs=spec.get("jobs", 1),
                   stack=stack, environment=environment(env.device), params=params, recipe=recipe)
    if tested:  # the test set, seen once, at the epoch chosen on validation
        best, (test_loss, test_acc) = tested
        metrics.update(selected_epoch=best["epoch"], val_acc=best["val_acc"], test_loss=test_loss,
                       final_test_acc=test_acc, max_test_acc=None, max_epoch=None)
    folder = Path(spec["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "params.json", dict(params, protocol=spec["protocol"],
                                                   scheduler=spec["scheduler"], recipe=recipe))
    write_history(folder, history)
    atomic_write_json(folder / "metrics.json", metrics)
    return metrics


def make_cut_scheduler(optimizer, epoch=18, factor=0.1):
    """The learning-rate cut the report's curve shows, at a fixed epoch: lr times ``factor`` from
    epoch ``epoch + 1`` on, whatever the loss does (step it once per epoch).

    The report's ReduceLROnPlateau (patience 15) could cut after epoch 18 only if the loss it watched
    was lowest at epoch 2. Our test loss is lowest around epochs 15-21, so the same scheduler never
    cuts within 30 epochs; this replays the report's cut, to ask what the cut itself is worth.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ValueError(f"epoch must be an integer >= 1, got {epoch!r}")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor < 1:
        raise ValueError(f"factor must be a number between 0 and 1, got {factor!r}")
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[epoch], gamma=factor)


def recipe_spec(run, env, ingredient="full recipe"):
    """One row of the recipe's table as a run of its own (notebook 07): the sweep's spec for
    ``run`` and ``env`` (its precision kept), trained into ``env.run_dir``, else
    ``<reports>/recipe-<profile>/``. An unknown ingredient is refused here, before any work."""
    recipe_for(run, ingredient, name="ingredient")
    folder = Path(env.run_dir).expanduser() if env.run_dir else reports_root() / f"recipe-{run.profile}"
    return dict(run_spec(ingredient, {"recipe": ingredient}, run.seed, as_dict(run, env)),
                folder=str(folder))


# ----------------------------------------------------------------------------- stacked runs
def member_of(spec, device):
    """One run, built as its spec says, for :func:`run_one` or as one run of a stack: its ``run`` and
    ``env``, the loop its ``fast`` asks for (``fast``; ``graphs`` False for "eager"), loaders
    (``train``, ``eval``: the validation split under the honest protocol, which ``validating`` says,
    else the test set; ``test``), initialised ``net`` and ``eval_net`` (the recipe's EMA copy), loss
    (``test_loss``; ``loss`` per example, for a stack), optimizer, a maker of its scheduler from an
    optimizer, and for the recipe its step ``hooks`` and ``background`` (a black pixel, normalised)."""
    run, env = from_dict(dict(spec["params"], run_dir=spec["folder"]))
    honest = spec["protocol"] == "honest"  # the recipe's runs all are
    recipe = recipe_for(run, spec["recipe"]) if spec.get("recipe") else None
    member = dict(spec=spec, run=run, env=env, device=device, key=spec_key(spec), validating=honest,
                  recipe=recipe, hooks={}, fast=use_fast_path(env.fast, device),
                  graphs=False if env.fast == "eager" else None)
    loaders = honest_loaders(run, env.data_root, device, recipe and recipe.batch_size) if honest \
        else make_loaders(run, env.data_root, device, member["fast"])
    member["train"], member["eval"], member["test"] = loaders[0], loaders[1], loaders[-1]
    if recipe:
        torch.manual_seed(run.seed)
        background = float(member["train"].normalize(torch.zeros(())))
        net, eval_net, loss, optimizer, plateau, hooks = make_recipe(recipe, device,
                                                                     len(member["train"]), background)
        member.update(background=background, architecture=lambda: PatchMixer(recipe),
                      scheduler=(lambda opt: make_scheduler(opt)) if plateau else None,
                      eval_net=eval_net, hooks=hooks)
    else:
        net, loss, optimizer, _ = build(run, device)
        member.update(architecture=lambda: NeuralNetwork(run.patch_size),
                      scheduler=scheduler_maker(spec["scheduler"], run.patience), eval_net=net)
    member.update(net=net, optimizer=optimizer, test_loss=loss,
                  loss=nn.CrossEntropyLoss(reduction="none",
                                           label_smoothing=getattr(loss, "label_smoothing", 0.0)))
    return member


def scheduler_maker(name, patience):
    """What builds a run's scheduler from its optimizer (a stack member's: from its shadow), by its
    name in CLAIMS: "plateau" (the report's), "none", or "cut18" (the cut the report's curve shows)."""
    return {"plateau": lambda opt: make_scheduler(opt, patience), "none": None,
            "cut18": lambda opt: make_cut_scheduler(opt, epoch=18)}[name]


def run_stack(specs, log=print):
    """Train ``specs`` (runs of one :func:`~nbutils.tools.claims.stack_key`) as one stack and write
    each member's run folder as :func:`run_one` would; a member that diverged is logged and left
    unfinished. Returns the number of members that failed. The stack's checkpoint is in the sweep's
    ``stacks/`` folder until every member's folder is written."""
    device = resolve_device(specs[0]["params"]["device"])
    members = [member_of(spec, device) for spec in specs]
    first = members[0]
    plan = first["recipe"] or first["run"]  # what sets the epochs and the precision
    root = Path(specs[0]["folder"]).parents[1]  # the sweep's folder: runs/<name>/ are in it
    checkpoint = root / "stacks" / f"{stack_id([m['key'] for m in members])}.pt"
    log(f"{len(specs)} runs trained as one stack (its epoch lines give their mean): "
        + ", ".join(Path(spec["folder"]).name for spec in specs))
    trainer = train_stack(members, plan.epochs, device, plan.precision, first["graphs"], checkpoint, log)
    for member, history, diverged, best in zip(members, trainer.histories, trainer.diverged,
                                               trainer.best):
        if diverged is not None:
            epoch, batch = diverged
            log(f"FAILED {Path(member['spec']['folder']).name}: the loss became NaN/inf at epoch {epoch}"
                + (f", batch {batch}" if batch >= 0 else "") + "; its stack's other runs trained on")
            continue
        recipe = dataclasses.asdict(member["recipe"]) if member["recipe"] else None
        finish_run(member["spec"], member["run"], member["env"], history, recipe,
                   test_once(member, best) if member["validating"] else None, stack=len(members))
    checkpoint.unlink(missing_ok=True)
    return sum(diverged is not None for diverged in trainer.diverged)


def train_group(group, log=print):
    """One group of :func:`~nbutils.tools.claims.stack_groups`, a stack or a single run, trained in
    this process; returns the number of its runs that failed."""
    if len(group) > 1:
        return run_stack(group, log)
    run_one(group[0])
    return 0


def unfinished(specs):
    """The specs whose run has not finished (runs are found by what they compute, see spec_key)."""
    done = finished_runs(Path(specs[0]["folder"]).parents[1]) if specs else {}
    return [s for s in specs if spec_key(s) not in done]


def execute(specs, jobs, max_runs=None, stack=1, log=print):
    """Run the unfinished specs (the first ``max_runs`` of them), ``stack`` runs of one shape at a time
    as one model (:func:`run_stack`); a failed run is logged, not fatal. Returns the number that
    failed.

    ``jobs=1`` trains them one after the other in this process, which pays for the imports, the CUDA
    context and the data once. ``jobs > 1`` runs that many processes at a time: for a CPU with cores
    to spare. On one GPU keep ``jobs=1``, because processes time-slice the device rather than share
    it (eight processes at once took 7 to 9 times longer a run, reports/gpu-check/); stacks share it.
    """
    todo = [dict(s, jobs=jobs) for s in unfinished(specs)]
    log(f"{len(specs) - len(todo)} of {len(specs)} runs already finished; {len(todo)} to go, "
        + (f"in stacks of up to {stack}" if stack > 1 else f"{jobs} at a time")
        + ("" if max_runs is None else f", {min(max_runs, len(todo))} now"))
    groups = stack_groups(todo[:max_runs], stack)
    if jobs == 1:
        return sum(train_and_log(group, log) for group in groups)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return sum(pool.map(lambda group: train_and_log(group, log, apart=True), groups))


def train_and_log(group, log, apart=False):
    """Train ``group`` (:func:`train_group`), in this process or (``apart``) in a process of its own,
    and log what came of each of its runs; returns the number that failed."""
    start, error = time.perf_counter(), None
    if apart:
        done = subprocess.run([sys.executable, "-m", "nbutils.tools.sweep", "--one", json.dumps(group)],
                              capture_output=True, text=True)
        failed, error = (len(group), done.stderr) if done.returncode else (0, None)
    else:
        try:
            failed = train_group(group, log)
        except Exception:  # noqa: BLE001 - one broken run must not stop the sweep; its error is logged
            failed, error = len(group), traceback.format_exc()
    took = time.perf_counter() - start
    if error:
        log(f"FAILED {', '.join(Path(s['folder']).name for s in group)} after {took:.0f} s:\n"
            f"{error[-2000:]}")
    for spec in group:  # the result in the log too: a log outlives folders that fail to come back
        path = Path(spec["folder"]) / "metrics.json"
        if path.exists():
            log(f"done {path.parent.name} in {took:.0f} s"
                + (f" (a stack of {len(group)})" if len(group) > 1 else "")
                + f": final test acc {100 * json.loads(path.read_text())['final_test_acc']:.2f} %")
    return failed


# ----------------------------------------------------------------------------- the command
def make_parser():
    parser = argparse.ArgumentParser(prog="python3 -m nbutils sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", default="all", help=f"comma-separated, of {list(CLAIMS)}")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)),
                        help=f"comma-separated (default: {','.join(map(str, SEEDS))})")
    parser.add_argument("--profile", default="seed",
                        help="seed (default): the report's protocol, GPU work; smoke: a CPU-sized check")
    parser.add_argument("--precision", default="fp32",
                        help="fp32 (the report's), or tf32/bf16: the fast_path claim says what they cost")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time (default: 1; processes time-slice a GPU, so keep 1 there)")
    parser.add_argument("--stack", type=int, default=None, metavar="K",
                        help="train up to K runs of one shape as one model (default: "
                             f"{DEFAULT_STACK['cuda']} on a GPU, which they share; 1 on a CPU, not faster)")
    parser.add_argument("--max-runs", type=int, default=None, metavar="N",
                        help="train at most N unfinished runs, in plan order (a sweep in pieces)")
    parser.add_argument("--out", default=None, help="default: reports/ablations")
    parser.add_argument("--tables-only", action="store_true",
                        help="write the tables and plots from the finished runs; train nothing")
    parser.add_argument("--compare-with", default=None, metavar="DIR", help="a sweep folder of runs "
                        "trained alone: stacked-vs-single.md sets this folder's stacked runs beside them")
    # A group of runs, in this process: execute's --jobs, and a test that kills a stack and resumes it.
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    return parser


def checked_args(parser, args):
    """``(claim names, seeds)`` of the command line; a bad argument stops here, before any work."""
    names = list(CLAIMS) if args.claims == "all" else [c for c in args.claims.split(",") if c]
    unknown = [c for c in names if c not in CLAIMS]
    if unknown:
        parser.error(f"--claims: unknown {unknown}; allowed: {list(CLAIMS)} or all")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not seeds or min(seeds) < 0:
        parser.error("--seeds needs at least one seed >= 0")
    if len(set(seeds)) < len(seeds):  # a repeated seed would count one run twice in a mean ± std
        parser.error(f"--seeds must not repeat a seed, got {args.seeds!r}")
    for name, low in (("jobs", 1), ("stack", 1), ("max_runs", 0)):
        value = getattr(args, name)
        if value is not None and value < low:
            parser.error(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    if args.stack not in (None, 1) and args.jobs > 1:
        parser.error("--stack trains its runs in this process: use it with --jobs 1")
    if args.compare_with and not (Path(args.compare_with) / "runs").is_dir():
        parser.error(f"--compare-with must be a sweep folder (one holding runs/), and "
                     f"{args.compare_with} is not")
    return names, seeds


def main(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.one:
        group = json.loads(args.one)
        tune_cpu_allocator(group[0]["params"]["device"])  # process-wide: where the command starts
        return 1 if train_group(group) else 0
    names, seeds = checked_args(parser, args)
    claims = [CLAIMS[c] for c in names]
    root = Path(args.out) if args.out else reports_root() / "ablations"
    if root.exists() and not root.is_dir():
        parser.error(f"--out must be a folder, and {root} is a file")
    try:
        # The base runs the fast path explicitly, so that "graphs fp32" and the base are one run.
        base_run, base_env = resolve(args.profile, device=args.device, precision=args.precision,
                                     fast="on")
        base = as_dict(base_run, base_env)
        specs = plan(claims, seeds, base, root)
        for spec in specs.values():  # every run's parameters are checked before the first one trains
            resolve(args.profile, **{k: v for k, v in spec["params"].items() if k != "profile"})
    except ValueError as e:  # a bad --profile, --device or --precision
        parser.error(str(e))
    if not args.tables_only:
        tune_cpu_allocator(base_env.device)  # before the estimate, as the runs will train
        todo = len(unfinished(list(specs.values())))
        warn_if_slow(base_run, base_env.device,
                     runs=todo if args.max_runs is None else min(todo, args.max_runs))
    # --jobs trains one run a process: its runs are never stacked (--stack with it is refused above)
    stack = 1 if args.jobs > 1 else args.stack or DEFAULT_STACK.get(resolve_device(base_env.device).type, 1)
    failed = 0 if args.tables_only else execute(list(specs.values()), args.jobs, args.max_runs,
                                                stack)
    context = dict(command=" ".join(["python3 -m nbutils sweep", *(argv or sys.argv[1:])]),
                   profile=args.profile, precision=args.precision,
                   created=time.strftime("%Y-%m-%d %H:%M:%S"),
                   protocol=f"profile {base['profile']!r}, the fast path in {args.precision} unless a "
                            f"row says otherwise")
    report = write_tables(claims, seeds, root, context, base)
    for key, claim in report["claims"].items():
        print(f"{key}: {status_line(claim)}")
    print(f"written: {root / 'README.md'}")
    if args.compare_with:
        side_by_side = stack_comparison(root, Path(args.compare_with))
        if side_by_side is None:
            print(f"no setting here was trained both in a stack and alone in {args.compare_with}")
        else:
            atomic_write_text(root / "stacked-vs-single.md", side_by_side)
            print(side_by_side + f"written: {root / 'stacked-vs-single.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
