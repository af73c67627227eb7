"""The book's own code runs on nbutils: the PyTorch cells of d2l's chapters 3 (linear networks) and 4
(multilayer perceptrons) at the commit the course's my_utils comes from, as extracted into
tests/d2l_book/ by its extract.py, each section run top to bottom in one Jupyter kernel.

Nothing of the book's code changes but ``import nbutils as d2l`` in place of ``from d2l import torch
as d2l`` and the epoch counts in EPOCHS. Each section starts from an empty namespace with fixed seeds,
in a folder of its own whose ``../data`` is the real Fashion-MNIST (the book's ``root="../data"``), as
in the book's build, where each notebook ran in its chapter's folder beside the repository's data/.
"""
import os
import re
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

BOOK = Path(__file__).resolve().parent / "d2l_book"
IMPORT = ("from d2l import torch as d2l", "import nbutils as d2l")
# The book's line -> the line run here: fewer epochs, so that all sections take under a minute.
EPOCHS = {
    "chapter_linear-networks/softmax-regression-scratch": [("num_epochs = 10", "num_epochs = 1")],
    "chapter_linear-networks/softmax-regression-concise": [("num_epochs = 10", "num_epochs = 1")],
    "chapter_multilayer-perceptrons/mlp-scratch": [("num_epochs, lr = 10, 0.1", "num_epochs, lr = 1, 0.1")],
    "chapter_multilayer-perceptrons/mlp-concise": [("batch_size, lr, num_epochs = 256, 0.1, 10",
                                                    "batch_size, lr, num_epochs = 256, 0.1, 1")],
    "chapter_multilayer-perceptrons/dropout": [("num_epochs, lr, batch_size = 10, 0.5, 256",
                                                "num_epochs, lr, batch_size = 1, 0.5, 256")],
    "chapter_multilayer-perceptrons/underfit-overfit": [("num_epochs=400", "num_epochs=20"),
                                                        ("num_epochs=1500", "num_epochs=20")],
    "chapter_multilayer-perceptrons/weight-decay": [("num_epochs, lr = 100, 0.003",
                                                     "num_epochs, lr = 10, 0.003")] * 2,
}
# The one error the shortening causes, and what it must say: softmax-regression-scratch's own
# train_ch3 (the book's, not nbutils') ends by asserting what its 10 epochs reach, train loss < 0.5;
# one epoch reaches about 0.79 (untrained: ln 10 = 2.30). Ten epochs would pass, in 30 s more.
EXPECTED_ERRORS = {
    ("chapter_linear-networks/softmax-regression-scratch", 19):
        re.compile(r"assert train_loss < 0\.5, train_loss\n.*AssertionError: 0\.[5-9]\d*$", re.S),
}
EXCLUDED = {
    "chapter_multilayer-perceptrons/kaggle-house-price":
        "downloads its data (d2l.download, from d2l's S3 bucket), and tests never touch the network; "
        "it also needs pandas, which the bundle does not install",
}
SECTIONS = sorted(p.relative_to(BOOK).with_suffix("").as_posix() for p in BOOK.glob("chapter_*/*.py"))
CELL_TIMEOUT = 300  # seconds: far beyond any cell's time here, short of a hung kernel's
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cells(section):
    """The section's cells as this test runs them: the import and EPOCHS replaced (a pair replaces
    one occurrence: a line the book has twice is listed twice, and none may be left)."""
    text = (BOOK / f"{section}.py").read_text()
    for old, new in [IMPORT] + EPOCHS.get(section, []):
        assert old in text, f"{section}: {old!r} is not in the book's code"
        text = text.replace(old, new, 1)
    left = [old for old, _ in [IMPORT] + EPOCHS.get(section, []) if old in text]
    assert not left, f"{section}: {left} left unreplaced"
    return [c.strip("\n") for c in text.split("\n# %%\n")[1:]]


def test_every_section_is_run_or_excluded_for_a_reason():
    assert set(EXCLUDED) <= set(SECTIONS) and set(EPOCHS) <= set(SECTIONS)
    assert len(SECTIONS) == 14


@pytest.fixture(scope="module")
def kernel(real_root, tmp_path_factory):
    """One kernel for every section (starting one and importing torch takes seconds); ``../data``
    of each section's folder is the real data."""
    home = tmp_path_factory.mktemp("d2l_book")
    (home / "data").symlink_to(Path(real_root).resolve(), target_is_directory=True)
    # One thread, as conftest gives each test worker: with two on two shared cores an epoch takes
    # several times as long.
    env = {**os.environ, "NBUTILS_DATA": str(real_root), "OMP_NUM_THREADS": "1"}
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    yield home, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def run(kc, code):
    """Run ``code`` in the kernel; its error as text (None when it ran)."""
    errors = []

    def hook(msg):
        if msg["msg_type"] == "error":
            errors.append(ANSI.sub("", "\n".join(msg["content"]["traceback"])))

    reply = kc.execute_interactive(code, timeout=CELL_TIMEOUT, output_hook=hook)
    if reply["content"]["status"] != "ok":
        return "\n".join(errors) or reply["content"].get("evalue", "error")
    return None


@pytest.mark.realdata
@pytest.mark.parametrize("section", [s for s in SECTIONS if s not in EXCLUDED])
def test_the_books_section_runs_on_nbutils(kernel, section):
    home, kc = kernel
    folder = home / section.replace("/", "-")
    folder.mkdir()
    fresh = (f"%reset -f\nimport os, random, numpy, torch, matplotlib.pyplot\n"
             f"os.chdir({str(folder)!r}); random.seed(0); numpy.random.seed(0); torch.manual_seed(0)\n"
             f"matplotlib.pyplot.close('all')\ndel os, random, numpy, torch, matplotlib")
    assert run(kc, fresh) is None
    for i, cell in enumerate(cells(section), 1):
        error = run(kc, cell)
        expected = EXPECTED_ERRORS.get((section, i))
        if expected:
            assert error and expected.search(error.strip()), f"{section}, cell {i}: {error}"
        else:
            assert error is None, f"{section}, cell {i}:\n{cell}\n\n{error}"
