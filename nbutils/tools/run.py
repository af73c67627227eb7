"""Run notebooks 01→05 through papermill into one run folder.

    python3 -m nbutils reproduce [--profile seed|smoke] [-f params.yaml] [-p NAME VALUE]... [--name RUN]

The parameters are validated here first (the notebooks validate them again), and the dataset is read
once, so a bad value or a missing or corrupt file fails before any notebook runs. A value given with
``-p`` or ``-f`` always holds; the profile fills the rest. Each notebook gets the parameters its own
parameters cell names, and what it prints (one line per training epoch among it) streams to the
terminal as it runs. The run folder
``reports/<name>/`` (default ``<profile>-<timestamp>``) gets the executed notebooks, ``params.json``
and ``status.json``; the notebooks add history, checkpoint, metrics and figures. A failed cell stops
the run: papermill's failed notebook stays in the folder and ``status.json`` says ``failed``. A folder
holding a finished run is never written into again.
"""
from __future__ import annotations

import argparse
import ast
import json
import signal
import sys
import time
import traceback
from pathlib import Path

import papermill as pm
# ``-p lr 5e-4`` → 0.0005: a value read as papermill's own ``-p`` reads it, True, False and None by
# name, then an int, then a float, else the text (not YAML, which keeps ``5e-4`` a string).
from papermill.cli import _resolve_type as parse_value
import yaml

from ..data import verify_fashion_mnist
from ..estimate import warn_if_slow
from ..fast import tune_cpu_allocator
from ..io import atomic_write_json
from ..params import resolve
from ..paths import checkout, notebooks_dir, reports_root
from ..runs import as_dict
from .results import read_status, write_results_table, write_status


def notebooks():
    """Notebooks 01-05: the checkout's, else the copies installed with the package."""
    found = sorted(notebooks_dir().glob("0[1-5]_*.ipynb"))
    if len(found) != 5:
        raise FileNotFoundError(f"expected notebooks 01..05 in {notebooks_dir()}, found {found}")
    return found


def read_parameters_file(path):
    """A ``-f`` file: a YAML mapping of parameter names to values, as papermill reads one."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"parameters file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"parameters file {path} is not valid YAML: {e}") from None
    if not isinstance(values, (dict, type(None))):
        raise ValueError(f"parameters file {path} must map parameter names to values "
                         f"(`epochs: 10`), got a {type(values).__name__}")
    return values or {}  # an empty file sets nothing


def prepare(profile=None, overrides=None, name=None, root=None):
    """Validate the parameters and create the run folder; returns ``(params, folder, injected)``.

    ``injected`` is what papermill passes to the notebooks: the profile, the overrides and the run
    folder, each notebook getting those its parameters cell declares. The notebooks resolve them
    with the same :func:`~nbutils.params.resolve`, so that they and this runner agree on every value.
    """
    # A run's name is one folder inside reports/: '../x' or 'a/b' would put it elsewhere.
    if name and (Path(name).name != name or "\\" in name or name.startswith(".")):
        raise ValueError(f"--name must be one folder name, without '/', '\\' or a leading '.', "
                         f"got {name!r}")
    overrides = dict(overrides or {})
    given = overrides.pop("profile", profile)  # `-p profile smoke`, as papermill users write it
    if profile not in (None, given):
        raise ValueError(f"profile is given twice: --profile {profile} and -p profile {given}")
    profile = given or "seed"
    # The notebooks run inside the run folder, so a relative path is made absolute here: from the
    # repository root in a checkout (where the commands run), else from the working directory.
    base = checkout() or Path.cwd()
    for key in ("data_root", "checkpoint_dir"):
        if isinstance(overrides.get(key), str) and overrides[key]:
            overrides[key] = str((base / Path(overrides[key]).expanduser()).resolve())
    # resolve, not from_namespace: a notebook's globals hold other names, but here a name that is not
    # a parameter is a typo (`-p epoch 5`) that would otherwise run the report's 30 epochs.
    _, env = resolve(profile, **dict(overrides, run_dir=""))  # every check before any folder is made
    verify_fashion_mnist(env.data_root)  # a missing or corrupt file stops here, not in 01
    name = name or f"{profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = (Path(root) if root else reports_root()) / name
    if (read_status(folder) or {}).get("state") == "finished":
        raise ValueError(f"{folder} holds a finished run; choose another --name (results are never "
                         f"overwritten)")
    folder.mkdir(parents=True, exist_ok=True)
    injected = dict(overrides, profile=profile, run_dir=str(folder))
    return (*resolve(**injected), folder, injected)


# ipykernel 7 warns on every start that its local TCP sockets are unencrypted, five times a run, on
# the terminal the kernels inherit, and logs jupyter_client's SIGINT at shutdown as an ERROR: neither
# is the run's. A failing cell still stops the run, and papermill reports it; cells' stderr stays in
# the notebooks.
QUIET_KERNEL = ["--IPKernelApp.log_level=CRITICAL"]


def declared_parameters(path: Path):
    """The names that a notebook's ``parameters`` cell assigns."""
    cells = json.loads(path.read_text())["cells"]
    cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    return {t.id for node in ast.parse("".join(cell["source"])).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


class Indented:
    """A notebook's streamed output in the terminal (sys.stdout), indented under its name; papermill
    flushes it after each write."""
    at_line_start = True

    def write(self, text):
        for piece in text.splitlines(keepends=True):
            sys.stdout.write(("    " if self.at_line_start else "") + piece)
            self.at_line_start = piece.endswith("\n")

    def flush(self):
        sys.stdout.flush()


def execute(run, env, folder: Path, injected, log=print):
    """Run the five notebooks in order, each with the parameters its cell declares; True when all
    finished."""
    atomic_write_json(folder / "params.json", as_dict(run, env))
    write_status(folder, "running", started=time.strftime("%Y-%m-%d %H:%M:%S"), notebook=None)
    start = time.perf_counter()
    for nb in notebooks():
        log(f"[{folder.name}] {nb.name}")
        write_status(folder, "running", notebook=nb.name)
        try:
            names = declared_parameters(nb)
            pm.execute_notebook(str(nb), str(folder / nb.name), cwd=str(folder),
                                parameters={k: v for k, v in injected.items() if k in names},
                                kernel_name="python3", progress_bar=False,
                                stdout_file=Indented(), extra_arguments=QUIET_KERNEL)
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
    parser.add_argument("--profile", help="seed (the report's protocol, the default) or smoke")
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
        overrides.update({k: parse_value(v) for k, v in args.parameter})
        run, env, folder, injected = prepare(args.profile, overrides, args.name)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tune_cpu_allocator(env.device)  # 04's kernel trains tuned: time the estimate's step so too
    warn_if_slow(run, env.device)
    signal.signal(signal.SIGTERM, interrupt)  # a `kill` marks the run failed, like Ctrl-C
    try:
        return 0 if execute(run, env, folder, injected) else 1
    except KeyboardInterrupt:
        return 130  # execute() has marked the run folder failed


def interrupt(signum, frame):
    raise KeyboardInterrupt(f"stopped by signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
