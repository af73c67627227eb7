"""The bundle's commands, runnable on a bare machine from the repository root.

    python3 -m nbutils reproduce [--profile seed] [-p NAME VALUE ...]   run notebooks 01-05 into reports/
    python3 -m nbutils test [pytest args]                               the whole test suite
    python3 -m nbutils bench [--device auto] [...]                      my_utils loop vs the fast path
    python3 -m nbutils sweep [--claims all] [--seeds 0,1,2] [...]       the ablations, into reports/ablations
    python3 -m nbutils results                                          regenerate reports/RESULTS.md

Each command first sets the machine up, idempotently: the requirements (pip skips what is there),
the package itself (editable), and the dataset when it is missing. Only the standard library is
imported until then, so this works before torch is installed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def setup():
    """Install what is missing; fetch the dataset if absent. Safe to repeat."""
    _run([sys.executable, "-m", "pip", "install", "-q", "-r", str(REPO / "requirements.txt")])
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e",
          str(REPO)])
    ensure_dataset()


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


def _exec_module(module, args, **env):
    """Become ``python -m module args``: Ctrl-C and SIGTERM then reach it, not a waiting parent."""
    os.chdir(REPO)
    os.execve(sys.executable, [sys.executable, "-m", module, *args], dict(os.environ, **env))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in ("reproduce", "test", "bench",
                                                                   "sweep", "results", "setup"):
        print(__doc__)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    setup()
    if command == "setup":
        return 0
    if command == "test":
        _exec_module("pytest", rest, NBUTILS_PROFILE="smoke", NBUTILS_HEADLESS="1")
    module = {"reproduce": "nbutils.run", "results": "nbutils.results", "bench": "nbutils.bench",
              "sweep": "nbutils.sweep"}
    _exec_module(module[command], rest)


if __name__ == "__main__":
    sys.exit(main())
