"""The coursework's claims as tables: a grid of runs over seeds, through the training code of notebook 04.

    python3 -m nbutils sweep [--claims all] [--seeds 0,1,2] [--profile seed] [--jobs 1]
                             [--precision fp32] [--max-runs N] [--tables-only]

A claim is a list of variants of the report's protocol; its first variant is the choice the report
made. Every (variant, seed) is a run folder ``reports/ablations/runs/<variant>-s<seed>/`` (params,
history, metrics), trained by the fast path (CUDA graphs on a GPU), one after another in this process
or ``--jobs`` processes at once. Runs are found by what they compute, not by their folder's name: a
finished run serves every claim that needs it and is never trained again, so an interrupted sweep
resumes where it stopped. Then :mod:`nbutils.ablations` gives every claim whose runs are complete a
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

The ``recipe`` claim is the stronger conv-free model of :mod:`nbutils.recipe` under the honest
protocol, in bf16 autocast, then the same with one ingredient taken out per row.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .io import atomic_write_json
from .recipe import INGREDIENTS

__all__ = ["CLAIMS", "Claim", "finished_runs", "main", "plan", "recipe_spec", "run_one", "run_spec",
           "spec_key", "variants_to_run"]

VAL_SIZE = 5000
SEEDS = (0, 1, 2)


@dataclasses.dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    variants: tuple  # ((label, overrides), ...); the first is the report's choice


def _grid(name, values, chosen):
    return tuple((f"{name} {v}", {name: v}) for v in [chosen] + [v for v in values if v != chosen])


BASE = ("report protocol", {})
CLAIMS = {c.key: c for c in (
    Claim("fast_path", "The fast path (CUDA graphs, mixed precision) keeps the accuracy of eager fp32",
          (("eager fp32", {"fast": "eager", "precision": "fp32"}),
           ("graphs fp32", {"fast": "on", "precision": "fp32"}),
           ("graphs bf16", {"fast": "on", "precision": "bf16"}))),
    Claim("protocol", "The report's numbers survive an honest protocol (validation split, one test)",
          (BASE, ("honest protocol", {"protocol": "honest"}))),
    Claim("scheduler", 'The scheduler was "the key" to 90 %',
          (BASE, ("no scheduler", {"scheduler": "none"}))),
    # The report's curve jumps after epoch 18, where its scheduler cut the learning rate; ours never
    # cuts (see make_cut_scheduler). Its first row replays that cut: is the cut what bought 90 %?
    Claim("lr_cut", "The report's learning-rate cut after epoch 18 lifts the final accuracy",
          (("lr cut after epoch 18", {"scheduler": "cut18"}), BASE)),
    Claim("init", "kaiming_uniform beat xavier_normal, xavier_uniform and kaiming_normal",
          _grid("init", ("xavier_normal", "xavier_uniform", "kaiming_normal"), "kaiming_uniform")),
    Claim("batch_size", "Batch size 128 beat 64, 256, 512, 1024, 2048 and 4096",
          _grid("batch_size", (64, 256, 512, 1024, 2048, 4096), 128)),
    Claim("optimizer", "Adam at lr 1e-3 beat SGD and ASGD",
          _grid("optimizer", ("sgd", "asgd"), "adam")),
    Claim("epochs", "30 epochs beat 10, 20, 40, 50, 100 and 200",
          _grid("epochs", (10, 20, 40, 50, 100, 200), 30)),
    Claim("recipe", "A modern conv-free patch MLP reaches 93 % under the honest protocol; "
                    "each ingredient's share",
          # bf16 autocast: the recipe's target is a time (60 s), and it is what the recipe is for
          tuple((name, {"recipe": name, "precision": "bf16"}) for name in INGREDIENTS)),
)}
SWEEP_KEYS = ("protocol", "scheduler", "recipe")  # run options beyond Params


# ----------------------------------------------------------------------------- planning
def _slug(label):
    return re.sub(r"[^a-z0-9.]+", "-", label.lower()).strip("-")


def run_key(params: dict, protocol="report", scheduler="plateau", recipe=None):
    """What a run computes, as text: the training parameters, the run options and the seed.

    Runs are found by this key, not by folder name, so a finished run serves every claim and every
    later sweep that asks for the same computation, whatever its folder is called. ``recipe`` is the
    recipe's every setting (a dict, None for the coursework's model), not its row's name: a run made
    before the recipe changed is not the new recipe's run.
    """
    from .params import TRAINING_KEYS
    return json.dumps(dict({k: params[k] for k in TRAINING_KEYS}, protocol=protocol,
                           scheduler=scheduler, recipe=recipe), sort_keys=True)


def spec_key(spec):
    return run_key(spec["params"], spec["protocol"], spec["scheduler"], recipe_settings(spec))


def recipe_settings(spec):
    """The settings a recipe run trains with (what its metrics record as ``recipe``), or None."""
    from .params import Params
    if not spec["recipe"]:
        return None
    return dataclasses.asdict(recipe_for(Params(**spec["params"]), spec["recipe"]))


def finished_runs(root: Path):
    """``{key: metrics}`` of every finished run under ``root/runs`` (each with its ``folder``)."""
    found = {}
    for path in sorted((root / "runs").glob("*/metrics.json")):
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        key = run_key(m["params"], m.get("protocol", "report"), m.get("scheduler", "plateau"),
                      m.get("recipe"))
        found[key] = dict(m, folder=str(path.parent))
    return found


def plan(claims, seeds, base_params: dict, root: Path):
    """Every run the claims need, one per key, in the order the claims ask: ``{key: spec}``.

    ``base_params`` are the resolved parameters of the report's protocol (profile, precision, device).
    A run already finished keeps its folder; a new one gets a folder named after its variant.
    """
    done = {k: m["folder"] for k, m in finished_runs(root).items()}
    taken = set(done.values())
    runs = {}
    for claim in claims:
        for seed in seeds:  # seeds inside claims: a claim's runs finish together, early ones first
            for label, overrides in variants_to_run(claim):
                spec = run_spec(label, dict(overrides), seed, base_params)
                key = spec_key(spec)
                if key in runs:
                    continue
                if key == spec_key(run_spec(BASE[0], {}, seed, base_params)):  # named for what it is
                    spec["label"] = label = BASE[0]
                spec["folder"] = done.get(key) or _new_folder(root, label, spec, taken)
                taken.add(spec["folder"])
                runs[key] = spec
    return runs


def variants_to_run(claim):
    """The epochs claim trains only its longest variant (the others are read off its history)."""
    if claim.key != "epochs":
        return claim.variants
    longest = max(v["epochs"] for _, v in claim.variants)
    return ((f"epochs {longest}", {"epochs": longest}),)


def _new_folder(root, label, spec, taken):
    stem = f"{_slug(label)}-s{spec['seed']}"  # only for people: runs are found by their key
    folder, n = root / "runs" / stem, 1
    while str(folder) in taken or folder.exists():
        n += 1
        folder = root / "runs" / f"{stem}-{n}"
    return str(folder)


def run_spec(label, overrides, seed, base_params):
    """One run: its label and seed, its parameters (``base_params`` with ``overrides``) and the run
    options among the overrides (protocol, scheduler, recipe). ``overrides`` is consumed."""
    options = {k: overrides.pop(k) for k in SWEEP_KEYS if k in overrides}
    params = dict(base_params, **overrides, seed=seed, live_plot=False, resume=False)
    recipe = options.get("recipe")
    return dict(label=label, seed=seed, params=params, recipe=recipe,
                protocol="honest" if recipe else options.get("protocol", "report"),
                scheduler=options.get("scheduler", "plateau"))


def val_size_for(params):
    """5,000 held-out images of 60,000; a training subset (the smoke profile) holds out its share."""
    if not params.train_subset:
        return VAL_SIZE
    return max(10, round(VAL_SIZE * params.train_subset / 60_000))


# ----------------------------------------------------------------------------- one run
def run_one(spec, animator=None):
    """Train one run folder (in this process) and write its params, history and metrics.

    ``animator`` (:func:`~nbutils.train.training_animator`) plots it live, as in notebook 07.
    """
    from .experiment import environment, write_history
    from .params import Params
    from .train import History, evaluate

    params = Params(**dict(spec["params"], run_dir=spec["folder"]))
    folder = Path(spec["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    honest = spec["protocol"] == "honest"
    train = _train_recipe if spec.get("recipe") else _train_coursework
    best = {}

    def keep_best(history, eval_net):  # the honest protocol's model selection, on validation only
        if honest and history[-1]["val_acc"] > best.get("val_acc", -1.0):
            best.update(val_acc=history[-1]["val_acc"], epoch=history[-1]["epoch"],
                        state={k: v.detach().clone() for k, v in eval_net.state_dict().items()})

    history, eval_net, loss, test_iter, recipe = train(spec, params, honest, keep_best, animator)
    metrics = dict(label=spec["label"], seed=params.seed, protocol=spec["protocol"],
                   scheduler=spec["scheduler"], ingredient=spec["recipe"], epochs_run=len(history),
                   jobs=spec.get("jobs", 1),
                   train_seconds=sum(r["seconds"] for r in history),
                   environment=environment(params.device), params=params.as_dict(), recipe=recipe)
    if honest:
        eval_net.load_state_dict(best["state"])
        test_loss, test_acc = evaluate(eval_net, test_iter, loss)  # the one look at the test set
        metrics.update(selected_epoch=best["epoch"], val_acc=best["val_acc"], test_loss=test_loss,
                       final_test_acc=test_acc, max_test_acc=None)
    else:
        top = History(history).best()
        metrics.update(final_test_acc=history[-1]["test_acc"], max_test_acc=top["test_acc"],
                       max_epoch=top["epoch"])
    atomic_write_json(folder / "params.json", dict(params.as_dict(), protocol=spec["protocol"],
                                                   scheduler=spec["scheduler"], recipe=recipe))
    write_history(folder, history)
    atomic_write_json(folder / "metrics.json", metrics)  # last: its presence means "finished"
    return metrics


def _train_coursework(spec, params, honest, keep_best, animator=None):
    """The coursework's model through notebook 04's code: ``(history, net, loss, test_iter, None)``."""
    from .experiment import build, fit_params, make_loaders

    train_iter, *val, test_iter = make_loaders(params, val_size_for(params) if honest else 0)
    net, loss, optimizer, scheduler = build(params)
    history = fit_params(params, net, train_iter, test_iter, loss, optimizer, animator=animator,
                         scheduler=_scheduler(spec["scheduler"], optimizer, scheduler),
                         on_epoch_end=lambda h: keep_best(h, net),
                         val_iter=val[0] if val else None)
    return history, net, loss, test_iter, None


def _scheduler(name, optimizer, plateau):
    """A run's scheduler by its name in CLAIMS: "plateau" (the report's, as built), "none", or
    "cut18" (the cut the report's curve shows)."""
    if name == "cut18":
        from .train import make_cut_scheduler
        return make_cut_scheduler(optimizer, epoch=18)
    return {"plateau": plateau, "none": None}[name]


def recipe_for(params, ingredient, name="recipe"):
    """The :class:`~nbutils.recipe.Recipe` of one row of the recipe's ablation. A training subset
    (the smoke profile) trains for the profile's epochs instead, without warm-up. An unknown row is
    refused with ``name``, the caller's word for it."""
    from .recipe import Recipe

    if ingredient not in INGREDIENTS:
        raise ValueError(f"{name} must be one of {list(INGREDIENTS)}, got {ingredient!r}")
    short = dict(epochs=params.epochs, warmup_epochs=0) if params.train_subset else {}
    return Recipe(**INGREDIENTS[ingredient], precision=params.precision, **short)


def recipe_spec(params, ingredient="full recipe"):
    """One row of the recipe's table as a run of its own (notebook 07): the sweep's spec for
    ``params`` (:class:`~nbutils.params.Params`, its precision kept), trained into ``run_dir``, else
    ``<reports>/recipe-<profile>/``. An unknown ingredient is refused here, before any work."""
    from .experiment import reports_root
    recipe_for(params, ingredient, name="ingredient")
    folder = Path(params.run_dir).expanduser() if params.run_dir else \
        reports_root() / f"recipe-{params.profile}"
    return dict(run_spec(ingredient, {"recipe": ingredient}, params.seed, params.as_dict()),
                folder=str(folder))


def _train_recipe(spec, params, honest, keep_best, animator=None):
    """The stronger recipe, honest protocol: ``(history, evaluated net, loss, test_iter, recipe)``."""
    import torch

    from .experiment import make_loaders
    from .fast import FastTrainer
    from .recipe import make_recipe
    from .train import fit, resolve_device, seed_everything

    recipe = recipe_for(params, spec["recipe"])
    device = resolve_device(params.device)
    loader_params = dataclasses.replace(params, batch_size=recipe.batch_size, fast="on")
    train_iter, val_iter, test_iter = make_loaders(loader_params, val_size_for(params))
    seed_everything(params.seed)
    background = float(train_iter.normalize(torch.zeros(())))  # the value of a black pixel
    net, eval_net, loss, optimizer, scheduler, hooks = make_recipe(recipe, device, len(train_iter),
                                                                   background)
    trainer = FastTrainer(net, loss, optimizer, device, recipe.precision, eval_net=eval_net, **hooks)
    history = fit(net, train_iter, test_iter, loss, recipe.epochs, optimizer, scheduler, device,
                  animator, train_epoch=trainer.train_epoch, evaluate_fn=trainer.evaluate,
                  on_epoch_end=lambda h: keep_best(h, eval_net), val_iter=val_iter)
    return history, eval_net, loss, test_iter, dataclasses.asdict(recipe)


def unfinished(specs):
    """The specs whose run has not finished (runs are found by what they compute, see spec_key)."""
    done = finished_runs(Path(specs[0]["folder"]).parents[1]) if specs else {}
    return [s for s in specs if spec_key(s) not in done]


def _execute(specs, jobs, max_runs=None, log=print):
    """Run the unfinished specs (the first ``max_runs`` of them); a failed run is logged, not fatal.
    Returns the number that failed.

    ``jobs=1`` trains them one after the other in this process, which pays for the imports, the CUDA
    context and the data once. ``jobs > 1`` runs that many processes at a time: for a CPU with cores
    to spare. On one GPU keep ``jobs=1``, because processes time-slice the device rather than share
    it. Measured on an H100 with 8 at a time, a 30-epoch bf16 run took 143-173 s instead of 19 s, and
    no more runs finished per minute than one at a time would have given.
    """
    todo = [dict(s, jobs=jobs) for s in unfinished(specs)]
    log(f"{len(specs) - len(todo)} of {len(specs)} runs already finished; {len(todo)} to go, "
        f"{jobs} at a time" + ("" if max_runs is None else f", {min(max_runs, len(todo))} now"))
    todo = todo[:max_runs]

    def in_process(spec):
        try:
            run_one(spec)
            return None
        except Exception:  # noqa: BLE001 - one broken run must not stop the sweep; its error is logged
            import traceback
            return traceback.format_exc()

    def in_subprocess(spec):
        done = subprocess.run([sys.executable, "-m", "nbutils.sweep", "--one", json.dumps(spec)],
                              capture_output=True, text=True)
        return done.stderr if done.returncode else None

    def one(spec):
        start = time.perf_counter()
        error = (in_process if jobs == 1 else in_subprocess)(spec)
        took = time.perf_counter() - start
        if error:
            log(f"FAILED {spec['folder']} after {took:.0f} s:\n{error[-2000:]}")
        else:
            # the result in the log too: a log outlives run folders that fail to come back
            m = json.loads((Path(spec["folder"]) / "metrics.json").read_text())
            log(f"done {Path(spec['folder']).name} in {took:.0f} s: final test acc "
                f"{100 * m['final_test_acc']:.2f} %")
        return error is not None

    if jobs == 1:
        return sum(one(spec) for spec in todo)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return sum(pool.map(one, todo))


# ----------------------------------------------------------------------------- the command
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m nbutils sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", default="all", help=f"comma-separated, of {list(CLAIMS)}")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)),
                        help=f"comma-separated (default: {','.join(map(str, SEEDS))})")
    parser.add_argument("--profile", default="seed",
                        help="seed: the report's protocol, GPU work; smoke: CPU-sized, its numbers "
                             "mean nothing (default: seed)")
    parser.add_argument("--precision", default="fp32",
                        help="fp32 (the report's), or tf32/bf16 for cheaper runs: the fast_path claim "
                             "says what they cost in accuracy")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time (default: 1; processes time-slice a GPU, so keep 1 there)")
    parser.add_argument("--max-runs", type=int, default=None, metavar="N",
                        help="train at most N of the unfinished runs, in plan order (a sweep in "
                             "pieces, e.g. across short GPU leases)")
    parser.add_argument("--out", default=None, help="default: reports/ablations")
    parser.add_argument("--tables-only", action="store_true",
                        help="write the tables and plots from the finished runs; train nothing")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        run_one(json.loads(args.one))
        return 0
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
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.max_runs is not None and args.max_runs < 0:
        parser.error(f"--max-runs must be >= 0, got {args.max_runs}")

    from .ablations import status_line, write_tables  # which imports this module
    from .experiment import reports_root, warn_if_slow
    from .params import resolve

    precision = args.precision
    claims = [CLAIMS[c] for c in names]
    root = Path(args.out) if args.out else reports_root() / "ablations"
    if root.exists() and not root.is_dir():
        parser.error(f"--out must be a folder, and {root} is a file")
    try:
        # The base runs the fast path explicitly, so that "graphs fp32" and the base are one run.
        base_params = resolve(args.profile, device=args.device, precision=precision, fast="on")
        base = base_params.as_dict()
        specs = plan(claims, seeds, base, root)
        for spec in specs.values():  # every run's parameters are checked before the first one trains
            resolve(args.profile, **{k: v for k, v in spec["params"].items() if k != "profile"})
    except ValueError as e:  # a bad --profile, --device or --precision
        parser.error(str(e))
    if not args.tables_only:
        todo = len(unfinished(list(specs.values())))
        warn_if_slow(base_params, runs=todo if args.max_runs is None else min(todo, args.max_runs))
    failed = 0 if args.tables_only else _execute(list(specs.values()), args.jobs, args.max_runs)
    context = dict(command=" ".join(["python3 -m nbutils sweep", *(argv or sys.argv[1:])]),
                   profile=args.profile, precision=precision,
                   created=time.strftime("%Y-%m-%d %H:%M:%S"),
                   protocol=f"profile {base['profile']!r}, the fast path in {precision} unless a "
                            f"row says otherwise")
    report = write_tables(claims, seeds, root, context, base)
    for key, claim in report["claims"].items():
        print(f"{key}: {status_line(claim)}")
    print(f"written: {root / 'README.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
