"""The notebooks' ``#@save`` cells, saved into ``nbutils/coursework.py`` (notebooks 01-05, the core)
and ``nbutils/tools/mixer.py`` (notebook 06 on, the tools) (:mod:`nbutils.saved`).

    python3 -m nbutils export           # rewrite both modules from the notebooks
    python3 -m nbutils export --check   # exit 1, naming the notebook, where they disagree

A notebook kernel in the checkout does the first on ``import nbutils``; the check is the test
suite's. Both need the checkout's notebooks: an installed package's modules are the ones it was built
with, and are neither rewritten nor judged.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import saved
from ..paths import PACKAGE, checkout

NO_CHECKOUT = ("export needs a checkout: it writes nbutils/coursework.py and nbutils/tools/mixer.py "
               "from the notebooks beside it, and this nbutils, installed at {}, has none; clone the repository and run it there")


def shown(path: Path):
    repo = checkout()
    return path.relative_to(repo) if repo and path.is_relative_to(repo) else path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m nbutils export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a module and the notebooks disagree")
    args = parser.parse_args(argv)
    if saved.notebooks_home() is None:
        print(f"error: {NO_CHECKOUT.format(PACKAGE)}", file=sys.stderr)
        return 2
    try:
        if args.check:
            return check()
        texts = {part: saved.render(part=part) for part in saved.PARTS}
    except saved.ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for part, text in texts.items():
        module = saved.module_of(part)
        if module.exists() and module.read_text() == text:
            print(f"up to date: {shown(module)}")
            continue
        saved.write_module(text, part)
        print(f"written: {shown(module)} ({len(text.splitlines())} lines)")
    return 0


def check():
    """``export --check``: 0 when both modules are what the notebooks say, else 1, naming them."""
    failed = 0
    for part in saved.PARTS:
        module = saved.module_of(part)
        found = saved.differences(module.read_text() if module.exists() else "", part=part)
        if found:
            print(f"{shown(module)} disagrees with the notebooks in: "
                  f"{'; '.join(found)}. Edit the notebook, not the module, then run "
                  f"`python3 -m nbutils export`.", file=sys.stderr)
            failed = 1
        else:
            print(f"{shown(module)} is what the notebooks' #@save cells say")
    return failed


if __name__ == "__main__":
    sys.exit(main())
