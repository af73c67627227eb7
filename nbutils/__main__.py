"""The bundle's commands, runnable on a bare machine from the repository root.

    python3 -m nbutils reproduce [--profile seed] [-p NAME VALUE ...]   run notebooks 01-05 into reports/
    python3 -m nbutils test [pytest args]                               the whole test suite
    python3 -m nbutils export [--check]                                 the notebooks' #@save cells into nbutils
    python3 -m nbutils bench [--device auto] [...]                      my_utils loop vs the fast path
    python3 -m nbutils sweep [--claims all] [--seeds 0,1,2] [...]       the ablations, into reports/ablations
    python3 -m nbutils results                                          regenerate reports/RESULTS.md
    python3 -m nbutils setup                                            only the setup below

Each command but export first sets the machine up, idempotently, installing only what is missing:
the requirements, the package itself (editable), and the dataset (and for test, Debian's Chromium).
Only the standard library is imported until then, so this works before torch is installed.

Installed without a checkout (pip, Colab), setup fetches only the dataset, reproduce runs the
notebooks installed with the package (installing papermill if it is missing) into ./reports/, and
test and export, which need the checkout's tests and notebooks, say so in one line.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distributions, version
from pathlib import Path

from . import saved
from .paths import PACKAGE, checkout

REPO = checkout()


def _run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def setup(data=True):
    """Install what is missing; fetch the dataset if absent (unless ``data`` is false). Safe to repeat.

    pip is asked only when something is missing: even with nothing to do it takes about 20 s (the
    editable install rebuilds its wheel), and a command with a bad parameter should fail in seconds.
    An installed package has its requirements already; only the dataset is fetched.
    """
    if REPO is None:
        return ensure_dataset() if data else None
    if not requirements_met():
        _run([sys.executable, "-m", "pip", "install", "-q", "-r", str(REPO / "requirements.txt")])
    if not installed_here():
        _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(REPO)])
    if data:
        ensure_dataset()


def requirements_met(path=None):
    """Whether every requirement in ``path`` (the checkout's requirements.txt) is installed at a
    version it allows.

    False when that cannot be told (no ``packaging`` yet, a line it cannot parse): pip then decides.
    """
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # a bare machine; matplotlib brings packaging
        return False
    for line in Path(path or REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate():
                if not req.specifier.contains(version(req.name), prereleases=True):
                    return False
        except (InvalidRequirement, PackageNotFoundError):
            return False
    return True


def installed_here():
    """Whether the nbutils that Python finds outside this checkout (the first on the path, the one it
    imports) is an editable install of it, as notebook kernels and test subprocesses started
    elsewhere need. The checkout's own ``nbutils.egg-info``, which setuptools leaves there, is not
    an install and is skipped."""
    here = {"", ".", str(REPO)}
    for dist in distributions(name="nbutils", path=[p for p in sys.path if p not in here]):
        url = json.loads(dist.read_text("direct_url.json") or "{}")
        return bool(url.get("dir_info", {}).get("editable")) and url.get("url") == REPO.as_uri()
    return False


def ensure_dataset():
    """The dataset by the order nbutils.data documents; as root offline, the Debian package first."""
    code = "import nbutils.data as d; d.prepare_fashion_mnist(download=False)"
    if subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True).returncode == 0:
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            _run(["apt-get", "update", "-qq"], env=env)
            _run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], env=env)
        except subprocess.CalledProcessError:
            print("apt-get could not install dataset-fashion-mnist; trying torchvision's download")
    # Decompresses the package's files, or downloads; raises one clear error naming every place tried.
    _run([sys.executable, "-c", "import nbutils.data as d; print('data:', d.prepare_fashion_mnist())"],
         cwd=REPO)


def ensure_browser():
    """Debian's Chromium for the browser test (tests/test_browser.py), installed as root when absent.
    Playwright's own browser download cannot work offline; without Chromium that test skips."""
    if shutil.which("chromium"):
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            _run(["apt-get", "update", "-qq"], env=env)
            _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], env=env)
            return
        except subprocess.CalledProcessError:
            pass
    print("note: chromium could not be installed, so the browser test will skip "
          "(apt-get install chromium)", flush=True)


def parallel(args):
    """pytest-xdist's options: a worker per core (at most 4), each test file kept in one worker and
    in order; none where the caller chose its own -n or xdist is not installed."""
    if any(a == "-n" or a.startswith("--numprocesses") for a in args) or \
            importlib.util.find_spec("xdist") is None:
        return []
    return ["-n", str(max(1, min(4, os.cpu_count() or 1))), "--dist", "loadfile"]


def ensure_papermill():
    """papermill, which reproduce runs the notebooks with; Colab does not have it."""
    if importlib.util.find_spec("papermill") is None:
        print("reproduce runs the notebooks with papermill, which is not installed: installing it")
        _run([sys.executable, "-m", "pip", "install", "-q", "papermill>=2.5"])


def _exec_module(module, args, **env):
    """Become ``python -m module args``: Ctrl-C and SIGTERM then reach it, not a waiting parent.
    In a checkout it runs from the repository root; installed, from the working directory."""
    if REPO:
        os.chdir(REPO)
    os.execve(sys.executable, [sys.executable, "-m", module, *args], dict(os.environ, **env))


COMMANDS = ("reproduce", "test", "export", "bench", "sweep", "results", "setup")
MODULES = {"reproduce": "nbutils.tools.run", "results": "nbutils.tools.results",
           "bench": "nbutils.tools.bench", "sweep": "nbutils.tools.sweep",
           "export": "nbutils.tools.export"}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] not in COMMANDS:
        print(__doc__)
        print(f"error: unknown command {argv[0]!r}; one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "export":  # the standard library only: nothing to install first
        return _exec_module(MODULES[command], rest)
    if command == "test" and REPO is None:
        print(f"error: test runs the checkout's tests/, and this nbutils, installed at {PACKAGE}, has "
              f"none; clone the repository and run `python3 -m nbutils test` there", file=sys.stderr)
        return 2
    # A command's --help needs its module's imports, not the data: checking the files costs seconds.
    setup(data=not {"-h", "--help"} & set(rest))
    if command == "setup":
        return 0
    if command == "reproduce" and REPO is None:
        ensure_papermill()
    if command in ("reproduce", "bench", "sweep"):  # what they train is what the notebooks say now
        saved.sync()
    if command == "test":
        ensure_browser()
        return _exec_module("pytest", parallel(rest) + rest, NBUTILS_PROFILE="smoke")
    return _exec_module(MODULES[command], rest)


if __name__ == "__main__":
    sys.exit(main())
