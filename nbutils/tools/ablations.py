"""What the sweep's runs say: for each claim, its rows (mean ± std over seeds), its verdict, its
table and plot; ``reports/ablations/README.md`` and ``ablations.json``; notebook 06's display.

The runs are found as :mod:`nbutils.tools.claims` plans them, by what they compute. A claim whose runs are
not all finished gets no verdict, only its rows that have every seed.
"""
from __future__ import annotations

import json
import math
import statistics
import urllib.request
from pathlib import Path

from IPython.display import Image, Markdown, display
from matplotlib import pyplot as plt

from .. import GITHUB_REPOSITORY
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..plotting import save_figure
from ..paths import reports_root
from .claims import CLAIMS, finished_runs, run_spec, spec_key, variants_to_run

__all__ = ["ablations_folder", "fetch_committed", "format_table", "load_report", "show_report",
           "stack_comparison", "status_line", "summarize", "verdict", "write_tables"]

# One run's test accuracy moves by tenths of a point from one epoch to the next, so the fast_path
# verdict also compares the mean over each run's last epochs, a steadier measure of the same training.
LATE_EPOCHS = 5


# ----------------------------------------------------------------------------- a claim's rows
def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _pct(mean, sd):
    """A mean ± std in percent, as every table and verdict shows one; '–' where there is none."""
    return "–" if mean is None else f"{100 * mean:.2f} ± {100 * sd:.2f}"


def _metrics_for(claim, overrides, seed, finished, base_params):
    """One run's numbers for one row, or None (for ``epochs``: the prefix of the longest run), with
    what its history adds: ``late`` (:func:`_late`) and ``lr_cut``."""
    epochs = overrides["epochs"] if claim.key == "epochs" else None
    if epochs:
        (_, overrides), = variants_to_run(claim)  # the longest run, whose first epochs are this row's
    m = finished.get(spec_key(run_spec("", dict(overrides), seed, base_params)))
    if m is None:
        return None
    path = Path(m["folder"]) / "history.json"
    history = json.loads(path.read_text()) if path.exists() else None  # None: a folder without one
    if epochs:
        full, history = history, history[:epochs]
        m = dict(m, final_test_acc=history[-1]["test_acc"],
                 max_test_acc=max(r["test_acc"] for r in history),
                 train_seconds=m["train_seconds"] * len(history) / len(full))
    # lr_cut: whether the learning rate ever fell below its first value (None without a history)
    lrs = [r["lr"] for r in (history or []) if r.get("lr") is not None]
    cut = None if history is None else bool(lrs) and min(lrs) < lrs[0]
    return dict(m, late=_late(history), lr_cut=cut)


def _late(history):
    """(mean test accuracy over the last LATE_EPOCHS epochs, mean change from one of them to the
    next); Nones without a per-epoch test accuracy (the honest protocol tests once)."""
    accs = [r.get("test_acc") for r in (history or [])[-LATE_EPOCHS:]]
    if len(accs) < 2 or None in accs:
        return None, None
    return statistics.fmean(accs), statistics.fmean(abs(b - a) for a, b in zip(accs, accs[1:]))


def summarize(claim, seeds, root: Path, base_params):
    """The claim's rows (label, n, final mean/std, max mean/std, seconds) whose seeds have all
    finished, however many; None if none has."""
    finished = finished_runs(root)
    rows = []
    for label, overrides in claim.variants:
        found = [_metrics_for(claim, overrides, s, finished, base_params) for s in seeds]
        if None in found:
            continue
        finals, cuts = [m["final_test_acc"] for m in found], [m["lr_cut"] for m in found]
        final, final_sd = _stats(finals)
        top, top_sd = _stats([m.get("max_test_acc") for m in found])
        seconds, _ = _stats([m["train_seconds"] for m in found])
        late, late_sd = _stats([m["late"][0] for m in found])
        swing, _ = _stats([m["late"][1] for m in found])
        rows.append(dict(label=label, n=len(found), final=final, final_sd=final_sd, max=top,
                         max_sd=top_sd, seconds=seconds, late=late, late_sd=late_sd, swing=swing,
                         finals=finals, runs=[Path(m["folder"]).name for m in found],
                         ran_on=sorted({_ran_on(m) for m in found if "environment" in m}),
                         jobs=max((m.get("jobs") or 0) for m in found),  # 0: not recorded
                         stack=max((m.get("stack") or 1) for m in found),
                         lr_cut=None if None in cuts else sum(cuts)))  # None: a run without history
    return rows or None


def _ran_on(metrics):
    return f"{metrics['environment']['device_name']}, torch {metrics['environment']['torch']}"


# ----------------------------------------------------------------------------- the verdict
def verdict(claim, rows):
    """The claim against the data, on the final test accuracy: "holds" only if the report's choice
    beats every alternative by more than twice the standard error of the difference."""
    choice, others = rows[0], rows[1:]
    better, worse, tied = [], [], []
    for r in others:
        diff, spread = choice["final"] - r["final"], _spread(choice, r)
        (worse if diff > spread else better if -diff > spread else tied).append(r["label"])
    if claim.key == "protocol":  # the report's headline (best test epoch) against one honest test
        gap = choice["max"] - others[0]["final"]
        if gap > _spread(choice, others[0], "max"):
            return (f"does not hold: chosen on the test set the report scores {100 * gap:.2f} points "
                    f"more than the honest protocol's single test, beyond the seed-to-seed spread")
        return (f"holds: the honest protocol's single test is within {100 * abs(gap):.2f} points of "
                f"the report's best test epoch (within the seed-to-seed spread)")
    if claim.key == "recipe":
        cost, costliest = max((choice["final"] - r["final"], r["label"]) for r in others)
        reached = choice["final"] >= 0.93 and choice["seconds"] <= 60
        return (f"{'holds' if reached else 'does not hold'}: the full recipe scores "
                f"{_pct(choice['final'], choice['final_sd'])} % in {choice['seconds']:.0f} s (target "
                f"93.00 % in 60 s); taking out {costliest} costs most ({100 * cost:+.2f} points)")
    if claim.key == "fast_path":
        gaps = ", ".join(f"{r['label']} {100 * (r['final'] - choice['final']):+.2f}" for r in others)
        ok = all(abs(r["final"] - choice["final"]) <= 0.003 for r in others)
        return (f"{'holds' if ok else 'does not hold'}: mean final accuracy against eager fp32: "
                f"{gaps} points (allowed: within 0.30)" + _late_comparison(choice, others))
    note = _against_report(choice) if claim.key == "lr_cut" else ""
    if claim.key == "scheduler" and choice["lr_cut"] == 0:  # what the data say about *why*
        runs = "its one run" if choice["n"] == 1 else f"any of the {choice['n']} runs"
        note = (f"; the scheduler never cut the learning rate in {runs}, so "
                f"both rows trained the same way")
    if better:
        return f"does not hold: {', '.join(better)} did better, beyond the seed-to-seed spread{note}"
    if tied:
        return (f"not supported: {choice['label']} is within the noise of {', '.join(tied)}"
                + (f"; it beat {', '.join(worse)}" if worse else "") + note)
    return f"holds: {choice['label']} beat every alternative beyond the seed-to-seed spread{note}"


def _spread(choice, row, key="final"):
    """Twice the standard error of the difference between ``choice``'s mean ``key`` and ``row``'s
    final test accuracy, over their seeds: a gap beyond it is beyond the seed-to-seed spread."""
    return 2 * math.sqrt(choice[f"{key}_sd"] ** 2 / choice["n"] + row["final_sd"] ** 2 / row["n"])


def _against_report(row):
    """The cut's row beside the report's numbers; a run too short to reach the cut says so."""
    if row["lr_cut"] == 0:
        return "; the runs ended before epoch 19, so the cut never happened and both rows are one"
    # the coursework report's final and best-epoch test accuracies: 89.88 % and 90.05 %
    return (f"; with the cut the final test accuracy is {_pct(row['final'], row['final_sd'])} % and the "
            f"best epoch {_pct(row['max'], row['max_sd'])} %, against the report's 89.88 % and 90.05 %")


def _late_comparison(choice, others):
    """The same comparison on the mean of the last epochs, with how much one epoch moves; '' when a
    row has no per-epoch test accuracy."""
    if any(r.get("late") is None for r in [choice, *others]):
        return ""
    gaps = ", ".join(f"{r['label']} {100 * (r['late'] - choice['late']):+.2f}" for r in others)
    return (f". Averaged over each run's last {LATE_EPOCHS} epochs: {gaps} points; over those epochs "
            f"one run's test accuracy moved by {100 * choice['swing']:.2f} points from one epoch to the "
            f"next ({choice['label']}, mean over its runs), so one epoch is a noisy measure")


# ----------------------------------------------------------------------------- reports/ablations
def format_table(rows):
    """The rows as Markdown, then the sentences under them: where the runs trained, and which times
    are inflated or shared (a time marked * comes from runs that shared the device, one marked †
    from stacked runs, whose time is the stack's)."""
    lines = ["| variant | seeds | final test acc % | max test acc % | train s |",
             "|---|---|---|---|---|"]
    for r in rows:
        shared = ("" if r["jobs"] == 1 else " *") + (" †" if r.get("stack", 1) > 1 else "")
        lines.append(f"| {r['label']} | {r['n']} | {_pct(r['final'], r['final_sd'])} | "
                     f"{_pct(r['max'], r['max_sd'])} | {r['seconds']:.1f}{shared} |")
    ran_on = "; ".join(sorted({e for r in rows for e in r["ran_on"]}))
    text = f"Trained on {ran_on}."
    unknown = [r["label"] for r in rows if r["jobs"] == 0]
    if unknown:
        text += (f" \\* {', '.join(unknown)}: these runs trained before the sweep recorded how many "
                 f"runs shared the device, so their time may be inflated (the sweep's log in "
                 f"reports/gpu-check/ says).")
    for r in (r for r in rows if r["jobs"] > 1):
        text += (f" \\* {r['label']}: {r['jobs']} runs shared the device at a time, so its time is "
                 f"inflated about {r['jobs']}-fold.")
    for r in (r for r in rows if r.get("stack", 1) > 1):
        text += (f" † {r['label']}: trained in stacks of up to {r['stack']} runs, and a stacked run's "
                 f"time is its stack's, for all of its runs at once.")
    return "\n".join(lines) + "\n\n" + text


def stack_comparison(stacked_root: Path, single_root: Path):
    """Markdown: the settings trained in stacks under ``stacked_root`` and alone under
    ``single_root``, side by side: each stacked seed's final test accuracy both ways, the mean ± std
    of every run alone and of the stacked ones, and how many stacked runs fall inside the range of
    the runs alone. None if no setting was trained both ways."""
    def setting(key):  # what a run computes but for its seed
        return json.dumps(dict(json.loads(key), seed=None), sort_keys=True)

    alone, pairs = {}, {}
    for key, m in finished_runs(Path(single_root)).items():
        if (m.get("stack") or 1) == 1:
            alone.setdefault(setting(key), {})[m["seed"]] = m
    for key, m in finished_runs(Path(stacked_root)).items():
        if (m.get("stack") or 1) > 1 and setting(key) in alone:
            pairs.setdefault(setting(key), []).append(m)
    if not pairs:
        return None
    def pct(values):
        return ", ".join("–" if v is None else f"{100 * v:.2f}" for v in values)

    lines = ["| variant | seeds | alone % | stacked % | alone, mean ± std | stacked, mean ± std | "
             "stacked inside the range alone |", "|---|---|---|---|---|---|---|"]
    ran_on = set()
    for key, stacked in pairs.items():
        stacked.sort(key=lambda m: m["seed"])
        others = [m["final_test_acc"] for m in alone[key].values()]
        finals = [m["final_test_acc"] for m in stacked]
        same_seed = [alone[key].get(m["seed"], {}).get("final_test_acc") for m in stacked]
        inside = sum(min(others) <= v <= max(others) for v in finals)
        lines.append(f"| {stacked[0]['label']} | {', '.join(str(m['seed']) for m in stacked)} | "
                     f"{pct(same_seed)} | {pct(finals)} | {_pct(*_stats(others))} "
                     f"({len(others)} runs) | {_pct(*_stats(finals))} | {inside} of {len(finals)} |")
        ran_on |= {_ran_on(m) for m in [*stacked, *alone[key].values()] if "environment" in m}
    return "\n".join(lines) + (f"\n\nTrained on {'; '.join(sorted(ran_on))}." if ran_on else "") \
        + "\n"


def plot_claim(claim, rows, path):
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(rows)), 3))
    x = range(len(rows))
    ax.errorbar(x, [100 * r["final"] for r in rows], [100 * r["final_sd"] for r in rows], fmt="o",
                capsize=4, label="final")
    if all(r["max"] is not None for r in rows):
        ax.errorbar(x, [100 * r["max"] for r in rows], [100 * r["max_sd"] for r in rows], fmt="s",
                    capsize=4, alpha=0.6, label="max over epochs (chosen on test)")
    ax.set_xticks(list(x), [r["label"] for r in rows], rotation=20, ha="right")
    ax.set_ylabel("test accuracy %")
    ax.set_title(claim.statement, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


# README.md is hand-written around the tables (what they mean, what is still missing); the sweep
# rewrites only what stands between these two lines.
BEGIN = "<!-- the tables: generated by python3 -m nbutils sweep, down to the end marker -->"
END = "<!-- end of the generated tables -->"


def write_readme(root: Path, generated: str):
    """``root/README.md`` with ``generated`` between the markers, the rest of the file kept."""
    path = root / "README.md"
    old = path.read_text() if path.exists() else ""
    if BEGIN not in old or END not in old:
        old = f"# Ablations\n\n{BEGIN}\n{END}\n"
    head, rest = old.split(BEGIN, 1)
    atomic_write_text(path, f"{head}{BEGIN}\n{generated}\n{END}{rest.split(END, 1)[1]}")


def write_tables(claims, seeds, root: Path, context: dict, base_params):
    """The tables in ``README.md`` (:func:`write_readme`), ``ablations.json`` and one PNG per
    complete claim, in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    report = dict(context, seeds=list(seeds), claims={})
    text = [f"Generated by `{context['command']}` from the finished runs in `runs/`.", "",
            f"Seeds {list(seeds)}: every number is a mean ± standard deviation over them. "
            f"Protocol: {context['protocol']}. Each table names the machine its runs trained on.", ""]
    for claim in claims:
        rows = summarize(claim, seeds, root, base_params)
        text += [f"## {claim.key}: {claim.statement}", ""]
        if rows is None:
            text += ["Not all of this claim's runs have finished, so it has no table yet.", ""]
            report["claims"][claim.key] = None
            continue
        missing = [label for label, _ in claim.variants if label not in {r["label"] for r in rows}]
        entry = report["claims"][claim.key] = dict(statement=claim.statement, verdict=None, rows=rows)
        if missing:  # no verdict, which compares every row; the rows that have all their seeds
            # are shown, since one can answer its own question (the recipe's first, against 93 %)
            entry["missing"] = missing
            text += [_claim_text(entry), ""]
            continue
        entry["verdict"] = verdict(claim, rows)
        plot_claim(claim, rows, root / f"{claim.key}.png")
        text += [_claim_text(entry), "", f"![{claim.key}]({claim.key}.png)", ""]
    write_readme(root, "\n".join(text))
    atomic_write_json(root / "ablations.json", report)
    return report


def _claim_text(claim):
    """One claim's entry of ``ablations.json`` as Markdown, as README.md and notebook 06 show it: its
    table and notes, then its verdict; an unfinished claim's says first which rows are missing."""
    table = format_table(claim["rows"])
    if claim["verdict"] is None:
        return (f"Not all of this claim's runs have finished, so it has no verdict yet. The rows below "
                f"have all their seeds; still missing: {', '.join(claim['missing'])}.\n\n{table}")
    return f"{table}\n\n**Verdict:** {claim['verdict']}"


def status_line(claim):
    """What the sweep prints for a claim: its verdict, or how far it got."""
    if claim is None:
        return "incomplete"
    return claim["verdict"] or f"incomplete ({len(claim['rows'])} of its rows finished)"


# ----------------------------------------------------------------------------- notebook 06
def ablations_folder(folder=""):
    """``folder``, else ``reports/ablations`` (where the sweep writes)."""
    return Path(folder).expanduser() if folder else reports_root() / "ablations"


def load_report(folder=""):
    """The sweep's ``ablations.json`` as a dict, or None where no sweep has written one."""
    path = ablations_folder(folder) / "ablations.json"
    return json.loads(path.read_text()) if path.exists() else None


def fetch_committed(folder="", timeout=20):
    """The tables committed to the repository, fetched from GitHub into ``folder``: for an install
    without the repository's reports/, as in Colab. Returns the report, or None, saying why, where
    it cannot be fetched; a plot that cannot be fetched is left out, and its table shown without it.
    ``ablations.json``, which :func:`load_report` looks for, is written last."""
    url = f"https://raw.githubusercontent.com/{GITHUB_REPOSITORY}/main/reports/ablations/"

    def get(name):
        with urllib.request.urlopen(url + name, timeout=timeout) as response:
            return response.read()

    try:
        payload = get("ablations.json")
        report = json.loads(payload)
        plotted = [key for key, claim in report["claims"].items() if claim and claim["verdict"]]
    except (OSError, ValueError, KeyError) as e:  # no network (URLError is an OSError), no such file
        print(f"could not fetch the committed tables from {url}: {e}")
        return None
    folder = ablations_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for key in plotted:  # the sweep plots only the claims with a verdict
        try:
            atomic_write_bytes(folder / f"{key}.png", get(f"{key}.png"))
        except OSError as e:
            print(f"{key}.png could not be fetched ({e}): its table is shown without it")
    atomic_write_bytes(folder / "ablations.json", payload)
    return report


def show_report(report, folder="", keys=None):
    """Notebook 06's display: per claim (or those in ``keys``), the table, the machine, the verdict
    and the plot."""
    folder = ablations_folder(folder)
    for key, claim in report["claims"].items():
        if keys is not None and key not in keys:
            continue
        if claim is None:
            display(Markdown(f"### {CLAIMS[key].statement}\n\nNo table yet: not all of this claim's "
                             f"runs have finished (`python3 -m nbutils sweep --claims {key}`)."))
            continue
        display(Markdown(f"### {claim['statement']}\n\n{_claim_text(claim)}"))
        if (folder / f"{key}.png").exists():
            display(Image(filename=str(folder / f"{key}.png")))
