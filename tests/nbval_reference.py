"""Reference copies of the notebooks for nbval.

The committed notebooks carry no outputs, yet nbval compares a ``# NBVAL_CHECK_OUTPUT`` cell's output
with the stored one. So each run writes ``tests/nbval/<notebook>`` = the committed notebook with the
expected output filled into its checked cells, taken from the report (listing, shape table) and from
``tests/data/expected/``. nbval then checks the coursework's architecture against the report itself.
"""
from pathlib import Path

import nbformat

TESTS = Path(__file__).resolve().parent
NOTEBOOKS = TESTS.parent / "notebooks"
OUT = TESTS / "nbval"
DATA = TESTS / "data"
MARK = "# NBVAL_CHECK_OUTPUT"

# The expected stdout of each checked cell, in the order the cells appear in each notebook.
EXPECTED = {
    "01_data.ipynb": ["expected/class_names.txt", "expected/pixel_stats.txt", "expected/patch_shape.txt"],
    "02_model.ipynb": ["report_listing.txt", "report_shape_table.txt", "expected/parameters.txt"],
}


def checked_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(MARK)]


def build(out=OUT):
    """Write the reference copies; raise if a checked cell and its expected output do not pair up."""
    out.mkdir(exist_ok=True)
    written = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cells = checked_cells(nb)
        expected = EXPECTED.get(path.name, [])
        if len(cells) != len(expected):
            raise ValueError(f"{path.name}: {len(cells)} checked cells but {len(expected)} expected "
                             f"outputs in tests/nbval_reference.py")
        for cell, name in zip(cells, expected):
            text = (DATA / name).read_text()
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
            cell.execution_count = 1  # nbval skips comparing "unrun" reference cells
        nbformat.write(nb, out / path.name)
        written.append(out / path.name)
    return written


if __name__ == "__main__":
    for p in build():
        print(p)
