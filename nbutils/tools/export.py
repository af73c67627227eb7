"""The notebooks' ``#@save`` cells, saved into ``nbutils/coursework.py`` (:mod:`nbutils.saved`).

    python3 -m nbutils export           # rewrite nbutils/coursework.py from the notebooks
    python3 -m nbutils export --check   # exit 1, naming the notebook, where the two disagree

A notebook kernel in the checkout does the first on ``import nbutils``; the check is the test
suite's. Both need the checkout's notebooks: an installed package's module is the one it was built
with, and is neither rewritten nor judged.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import saved
from ..paths import PACKAGE, checkout

NO_CHECKOUT = ("export needs a checkout: it writes nbutils/coursework.py from the notebooks beside it, "
               "and this nbutils, installed at {}, has none; clone the repository and run it there")


def shown(path: Path):
    repo = checkout()
    return path.relative_to(repo) if repo and path.is_relative_to(repo) else path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m nbutils export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if the module and the notebooks disagree")
    args = parser.parse_args(argv)
    if saved.notebooks_home() is None:
        print(f"error: {NO_CHECKOUT.format(PACKAGE)}", file=sys.stderr)
        return 2
    module = saved.MODULE
    try:
        if args.check:
            found = saved.differences(module.read_text() if module.exists() else "")
            if found:
                print(f"{shown(module)} disagrees with the notebooks in: "
                      f"{'; '.join(found)}. Edit the notebook, not the module, then run "
                      f"`python3 -m nbutils export`.", file=sys.stderr)
                return 1
            print(f"{shown(module)} is what the notebooks' #@save cells say")
            return 0
        text = saved.render()
    except saved.ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    saved.write_module(text)
    print(f"written: {shown(module)} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
