"""Extract the PyTorch code of d2l's chapters 3 and 4 from a git checkout of d2l-ai/d2l-en.

    python3 tests/d2l_book/extract.py GIT_DIR [--check]

``GIT_DIR`` is a clone (or bare snapshot) of https://github.com/d2l-ai/d2l-en that holds commit
``COMMIT``, the one the course's ``my_utils.py`` was copied from. Each section's PyTorch cells are
written to ``tests/d2l_book/<chapter>/<section>.py``, one ``# %%`` line before each cell;
``--check`` writes nothing and fails if a committed file differs from what the commit gives.

Which cells are PyTorch's follows d2lbook as of that commit (``d2lbook/notebook.py``,
``get_tab_notebook`` and ``get_cell_tab``; ``d2lbook/common.py``, ``source_tab_pattern``):

* a code cell is a fenced block opened by ```` ```{.python .input ...} ```` (notedown's strict
  match); any other fence is markdown;
* a cell's tabs are those of the first ``# @tab a, b`` anywhere in it (``#@tab all``: every tab);
  a cell without one belongs to the default tab, the first in ``config.ini``'s ``tabs``: mxnet;
* the ``#@tab`` line itself is dropped, as d2lbook drops it from the tab's notebook.

Only the sections' code is written here: never d2l's library (``d2l/torch.py``).
"""
import argparse
import re
import subprocess
import sys
from pathlib import Path

COMMIT = "78c39a6cff4ff5a0905f3520053beea02f3ac5ce"
CHAPTERS = ("chapter_linear-networks", "chapter_multilayer-perceptrons")
TAB = "pytorch"
OUT = Path(__file__).resolve().parent
CODE_FENCE = re.compile(r"^```\{\.python \.input\b.*\}\s*$")
SOURCE_TAB = re.compile(r"# *@tab +([\w\,\ ]+)")  # d2lbook's source_tab_pattern, verbatim


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def code_cells(markdown):
    """The source of every code cell of a section, in order."""
    cells, cell = [], None
    for line in markdown.splitlines():
        if cell is None and CODE_FENCE.match(line):
            cell = []
        elif cell is not None and line.strip() == "```":
            cells.append("\n".join(cell))
            cell = None
        elif cell is not None:
            cell.append(line)
    if cell is not None:
        raise ValueError("a code cell is never closed")
    return cells


def tabs(cell, default="mxnet"):
    match = SOURCE_TAB.search(cell)
    return [t.strip() for t in match[1].split(",")] if match else [default]


def pytorch_cells(markdown):
    """The cells of the section's PyTorch notebook, without their ``#@tab`` line."""
    return ["\n".join(line for line in cell.split("\n") if not SOURCE_TAB.search(line)).strip("\n")
            for cell in code_cells(markdown) if tabs(cell) == ["all"] or TAB in tabs(cell)]


def render(path, cells):
    header = (f"# d2l-en commit {COMMIT}, {path}: its PyTorch cells, unchanged.\n"
              f"# Written by tests/d2l_book/extract.py (do not edit by hand; rerun it instead).\n")
    return header + "".join(f"\n# %%\n{cell}\n" for cell in cells)


def sections(repo):
    """``{relative output path: file text}`` for every section of CHAPTERS with PyTorch code."""
    out = {}
    for chapter in CHAPTERS:
        for path in git(repo, "ls-tree", "--name-only", f"{COMMIT}:{chapter}").split():
            if not path.endswith(".md"):
                continue
            cells = pytorch_cells(git(repo, "show", f"{COMMIT}:{chapter}/{path}"))
            if cells:
                out[f"{chapter}/{path[:-3]}.py"] = render(f"{chapter}/{path}", cells)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("repo", help="a git directory of d2l-ai/d2l-en that holds the commit")
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    if git(args.repo, "cat-file", "-t", COMMIT).strip() != "commit":
        raise SystemExit(f"{args.repo} does not hold commit {COMMIT}")
    wanted = sections(args.repo)
    stale = sorted(p.relative_to(OUT).as_posix() for p in OUT.glob("chapter_*/*.py")
                   if p.relative_to(OUT).as_posix() not in wanted)
    differ = sorted(p for p, text in wanted.items()
                    if not (OUT / p).exists() or (OUT / p).read_text() != text)
    if args.check:
        for p in differ + stale:
            print(f"differs from commit {COMMIT[:8]}: tests/d2l_book/{p}", file=sys.stderr)
        return 1 if differ or stale else 0
    for p in differ:
        (OUT / p).parent.mkdir(exist_ok=True)
        (OUT / p).write_text(wanted[p])
    for p in stale:
        (OUT / p).unlink()
    print(f"{len(wanted)} sections written from commit {COMMIT[:8]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
