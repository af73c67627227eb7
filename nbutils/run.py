"""Run notebooks 01→05 through papermill into one run folder.

    python3 -m nbutils reproduce [--profile seed|smoke] [-f params.yaml] [-p NAME VALUE]... [--name RUN]

The parameters are validated here first (the notebooks validate them again), and the dataset is read
once, so a bad value or a missing or corrupt file fails before any notebook runs. The run folder
``reports/<name>/`` (default ``<profile>-<timestamp>``) gets the executed notebooks, ``params.json``
and ``status.json``; the notebooks add history, checkpoint, metrics and figures. A failed cell stops
the run: papermill's failed notebook stays in the folder and ``status.json`` says ``failed``. A folder
holding a finished run is never written into again.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import yaml

from .data import verify_fashion_mnist
from .experiment import REPO, reports_root, warn_if_slow
from .io import atomic_write_json
from .params import DEFAULTS, from_namespace, load_profile, replaced_by_profile, resolve

NOTEBOOKS_DIR = REPO / "notebooks"
STATUS = "status.json"


def notebooks():
    found = sorted(NOTEBOOKS_DIR.glob("0[1-5]_*.ipynb"))
    if len(found) != 5:
        raise FileNotFoundError(f"expected notebooks 01..05 in {NOTEBOOKS_DIR}, found {found}")
    return found


def read_status(folder: Path):
    """The run folder's status.json as a dict, or None (an interactive folder has none)."""
    try:
        return json.loads((folder / STATUS).read_text())
    except (OSError, ValueError):
        return None


def write_status(folder: Path, state, **extra):
    status = dict(read_status(folder) or {}, state=state, pid=os.getpid(),
                  updated=time.strftime("%Y-%m-%d %H:%M:%S"), **extra)
    atomic_write_json(folder / STATUS, status)
    return status


def read_parameters_file(path):
    """A ``-f`` file: a YAML mapping of parameter names to values, as papermill reads one."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"parameters file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"parameters file {path} is not valid YAML: {e}") from None
    if values is None:  # an empty file sets nothing
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"parameters file {path} must map parameter names to values "
                         f"(`epochs: 10`), got a {type(values).__name__}")
    return values


def _parse_value(text):
    """``-p lr 5e-4`` → 0.0005, as papermill's own ``-p`` reads a value: True, False and None by
    name, then an int, then a float, else the text. (Not YAML, which keeps ``5e-4`` a string.)"""
    named = {"True": True, "False": False, "None": None}
    if text in named:
        return named[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _check_not_replaced(profile, overrides):
    """Refuse a given value that the profile would replace without a word.

    A value equal to the report's default counts as "not given", so that a notebook's untouched
    parameters cell follows the profile (:func:`~nbutils.params.resolve`). On the command line that
    would turn ``--profile smoke -p epochs 30`` into smoke's 1 epoch; say so, and how to get 30.
    """
    replaced = replaced_by_profile(profile, **overrides)
    if not replaced:
        return
    keep = {k: v for k, v in load_profile(profile).items() if v != DEFAULTS[k] and k not in replaced}
    command = " ".join(f"-p {k} {v}" for k, v in {**keep, **overrides}.items())
    given = ", ".join(f"{k}={overrides[k]!r}" for k in replaced)
    sets = ", ".join(f"{k}={v!r}" for k, v in replaced.items())
    raise ValueError(f"{given}: a value equal to the report's default follows the profile, and "
                     f"{profile} sets {sets}; to run with {given}, start from the seed profile: "
                     f"--profile seed {command}")


def _check_name(name):
    """A run's name is one folder inside reports/: '../x' or 'a/b' would put it elsewhere."""
    if name and (Path(name).name != name or "\\" in name or name.startswith(".")):
        raise ValueError(f"--name must be one folder name, without '/', '\\' or a leading '.', "
                         f"got {name!r}")


def prepare(profile=None, overrides=None, name=None, root=None):
    """Validate the parameters and create the run folder; returns ``(params, folder, injected)``.

    ``injected`` is what papermill passes to every notebook: the profile, the overrides and the run
    folder. Each notebook resolves them with the same :func:`~nbutils.params.from_namespace`, so the
    notebooks and this runner agree on every value.
    """
    _check_name(name)
    overrides = dict(overrides or {})
    given = overrides.pop("profile", profile)  # `-p profile smoke`, as papermill users write it
    if profile not in (None, given):
        raise ValueError(f"profile is given twice: --profile {profile} and -p profile {given}")
    profile = given or "seed"
    # The notebooks run inside the run folder, so a relative path is made absolute here, from the
    # repository root (where the commands run), never from whatever the current directory is.
    for key in ("data_root", "checkpoint_dir"):
        if isinstance(overrides.get(key), str) and overrides[key]:
            overrides[key] = str((REPO / Path(overrides[key]).expanduser()).resolve())
    # resolve, not from_namespace: a notebook's globals hold other names, but here a name that is not
    # a parameter is a typo (`-p epoch 5`) that would otherwise run the report's 30 epochs.
    params = resolve(profile, **dict(overrides, run_dir=""))  # every check before any folder is made
    _check_not_replaced(profile, overrides)
    verify_fashion_mnist(params.data_root or None)  # a missing or corrupt file stops here, not in 01
    injected = dict(overrides, profile=profile)
    name = name or f"{profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = (Path(root) if root else reports_root()) / name
    status = read_status(folder)
    if status and status.get("state") == "finished":
        raise ValueError(f"{folder} holds a finished run; choose another --name (results are never "
                         f"overwritten)")
    folder.mkdir(parents=True, exist_ok=True)
    injected["run_dir"] = str(folder)
    return from_namespace(injected), folder, injected


# ipykernel 7 warns on every start that its local TCP sockets are unencrypted, five times a run, on
# the terminal the kernels inherit. Errors still show; cells' own stderr is kept in the notebooks.
_QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]


def execute(params, folder: Path, injected, log=print):
    """Run the five notebooks in order; True when all finished."""
    import papermill as pm
    from .results import write_results_table
    os.environ["NBUTILS_HEADLESS"] = "1"  # the kernels inherit it: no live plot, figures to files
    atomic_write_json(folder / "params.json", params.as_dict())
    write_status(folder, "running", started=time.strftime("%Y-%m-%d %H:%M:%S"), notebook=None)
    start = time.perf_counter()
    for nb in notebooks():
        log(f"[{folder.name}] {nb.name}")
        write_status(folder, "running", notebook=nb.name)
        try:
            pm.execute_notebook(str(nb), str(folder / nb.name), parameters=injected,
                                cwd=str(folder), kernel_name="python3", progress_bar=False,
                                extra_arguments=_QUIET_KERNEL)
        except BaseException as e:  # a failed cell, Ctrl-C, SIGTERM: the folder says so
            message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            write_status(folder, "failed", notebook=nb.name, error=message,
                         traceback=traceback.format_exc(limit=3))
            write_results_table()
            log(f"[{folder.name}] FAILED in {nb.name}: {message}")
            if not isinstance(e, Exception):
                raise
            return False
    write_status(folder, "finished", seconds=time.perf_counter() - start)
    write_results_table()
    log(f"[{folder.name}] finished: {folder}")
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m nbutils reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=None,
                        help="seed (the report's protocol, the default) or smoke")
    parser.add_argument("-f", "--parameters-file", action="append", default=[],
                        help="YAML file of parameters (papermill's -f)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="one parameter (papermill's -p)")
    parser.add_argument("--name", default=None, help="run folder name under reports/")
    args = parser.parse_args(argv)
    try:
        overrides = {}
        for path in args.parameters_file:
            overrides.update(read_parameters_file(path))
        overrides.update({k: _parse_value(v) for k, v in args.parameter})
        params, folder, injected = prepare(args.profile, overrides, args.name)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    warn_if_slow(params)
    signal.signal(signal.SIGTERM, _interrupt)  # a `kill` marks the run failed, like Ctrl-C
    try:
        return 0 if execute(params, folder, injected) else 1
    except KeyboardInterrupt:
        return 130  # execute() has marked the run folder failed


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"stopped by signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
