"""The notebooks' ``#@save`` cells, saved into ``nbutils/coursework.py`` (notebooks 01-05, the core)
and ``nbutils/tools/mixer.py`` (notebook 06 on, the tools) (:mod:`nbutils.saved`).

    python3 -m nbutils export           # bring both modules up to date with the notebooks
    python3 -m nbutils export --check   # exit 1, naming the notebook, where they disagree

A notebook kernel in the checkout does the first on ``import nbutils``; the check is the test
suite's. Both need the checkout's notebooks: an installed package's modules are the ones it was built
with, and are neither rewritten nor judged.
"""
from __future__ import annotations

import argparse
import sys

from .. import saved
from ..paths import PACKAGE

NO_CHECKOUT = ("export needs a checkout: it writes nbutils/coursework.py and nbutils/tools/mixer.py "
               "from the notebooks beside it, and this nbutils, installed at {}, has none; clone the repository and run it there")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m nbutils export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a module and the notebooks disagree")
    args = parser.parse_args(argv)
    if saved.notebooks_home() is None:
        print(f"error: {NO_CHECKOUT.format(PACKAGE)}", file=sys.stderr)
        return 2
    failed = 0
    try:
        if not args.check:  # what a kernel's `import nbutils` does: rewrite where they disagree
            if not saved.sync(imported=False):
                print("up to date: nbutils/coursework.py and nbutils/tools/mixer.py")
            return 0
        for part in saved.PARTS:
            module, name = saved.module_of(part), saved.shown_name(part)
            found = saved.differences(module.read_text() if module.exists() else "", part=part)
            if found:
                print(f"{name} disagrees with the notebooks in: {'; '.join(found)}. Edit the notebook, "
                      "not the module, then run `python3 -m nbutils export`.", file=sys.stderr)
                failed = 1
            else:
                print(f"{name} is what the notebooks' #@save cells say")
    except saved.ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return failed


if __name__ == "__main__":
    sys.exit(main())
