"""The coursework's claims, and the runs each one needs: what ``python3 -m nbutils sweep`` trains.

A claim is a list of variants of the report's protocol; its first variant is the choice the report
made. Every (variant, seed) is a run, found by what it computes (:func:`run_key`), not by its folder's
name: a finished run serves every claim that needs it and is never trained again. The ``epochs``
claim reads its 10-, 20-, ... epoch results off one run per seed of the longest length:
ReduceLROnPlateau does not depend on the planned number of epochs, so the first N epochs of a long run
*are* an N-epoch run.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import re
from pathlib import Path

from ..runs import TRAINING_KEYS, from_dict
from .recipe import INGREDIENTS, recipe_for

__all__ = ["BASE", "CLAIMS", "Claim", "MEMBER_KEYS", "SEEDS", "finished_runs", "plan", "run_key",
           "run_spec", "spec_key", "stack_groups", "stack_key", "variants_to_run"]

SEEDS = (0, 1, 2)


# variants: ((label, overrides), ...); the first is the report's choice
Claim = collections.namedtuple("Claim", "key statement variants")


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
    # cuts (see sweep.make_cut_scheduler). Its first row replays that cut: is the cut what bought 90 %?
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
SWEEP_KEYS = ("protocol", "scheduler", "recipe")  # run options beyond a Run and its Env


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
    return json.dumps(dict({k: params[k] for k in TRAINING_KEYS}, protocol=protocol,
                           scheduler=scheduler, recipe=recipe), sort_keys=True)


def spec_key(spec):
    return run_key(spec["params"], spec["protocol"], spec["scheduler"], recipe_settings(spec))


def recipe_settings(spec):
    """The settings a recipe run trains with (what its metrics record as ``recipe``), or None."""
    if not spec["recipe"]:
        return None
    return dataclasses.asdict(recipe_for(from_dict(spec["params"])[0], spec["recipe"]))


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
                spec["folder"] = done.get(key) or _new_folder(root, label, spec, runs)
                runs[key] = spec
    return runs


def variants_to_run(claim):
    """The epochs claim trains only its longest variant (the others are read off its history)."""
    if claim.key != "epochs":
        return claim.variants
    longest = max(v["epochs"] for _, v in claim.variants)
    return ((f"epochs {longest}", {"epochs": longest}),)


def _new_folder(root, label, spec, planned):
    """A folder for a new run, taken neither on disk nor by a run ``planned`` before it."""
    stem = f"{_slug(label)}-s{spec['seed']}"  # only for people: runs are found by their key
    taken = {s["folder"] for s in planned.values()}
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


# ----------------------------------------------------------------------------- stacks
# What each run of a stack has of its own (nbutils.tools.stack); everything else the runs share.
MEMBER_KEYS = ("seed", "init", "lr", "weight_decay", "patience")
STACKABLE_OPTIMIZERS = ("adam", "sgd")  # and the recipe's AdamW; ASGD trains alone


def stack_key(spec):
    """What the runs of one stack share, as text (None: a run that trains alone): the architecture,
    the batch size, the epochs, the optimizer's type, the protocol and, for the recipe, the recipe."""
    params = spec["params"]
    if not spec["recipe"] and params["optimizer"] not in STACKABLE_OPTIMIZERS:
        return None
    shared = {k: params[k] for k in TRAINING_KEYS if k not in MEMBER_KEYS}
    return json.dumps(dict(shared, device=params["device"], protocol=spec["protocol"],
                           recipe=recipe_settings(spec)), sort_keys=True)


def stack_groups(specs, size):
    """``specs`` in stacks of at most ``size`` runs that share a :func:`stack_key`, in plan order
    (a stack starts where its first run stands); a run that trains alone is a stack of one."""
    groups, last = [], {}  # last: the newest stack of each key
    for spec in specs:
        key = stack_key(spec) if size > 1 else None
        group = last.get(key)
        if key is None or group is None or len(group) == size:
            group = last[key] = []
            groups.append(group)
        group.append(spec)
    return groups
