"""Where things are: the checkout (when there is one), the notebooks, and where a run's files go.

Only the standard library, so that ``python3 -m nbutils`` can ask before anything is installed. In a
checkout everything stays inside it; installed without one (``pip install``, Colab), the notebooks
come as package data and a run's files go under the working directory, which in Colab is the
``/content`` its file browser shows.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PACKAGE", "checkout", "data_root", "notebooks_dir", "reports_root"]

PACKAGE = Path(__file__).resolve().parent


def checkout() -> Path | None:
    """The repository this nbutils was imported from, or None for an installed package."""
    repo = PACKAGE.parent
    return repo if (repo / "pyproject.toml").is_file() and (repo / "notebooks").is_dir() else None


def notebooks_dir() -> Path:
    """The checkout's ``notebooks/``, else the copy installed with the package."""
    repo = checkout()
    return repo / "notebooks" if repo else PACKAGE / "notebooks"


def reports_root() -> Path:
    """``$NBUTILS_REPORTS``, else the checkout's ``reports/``, else ``reports/`` under the working
    directory (in Colab ``/content/reports``, where the student sees it)."""
    if os.environ.get("NBUTILS_REPORTS"):
        return Path(os.environ["NBUTILS_REPORTS"]).expanduser()
    repo = checkout()
    return repo / "reports" if repo else Path.cwd() / "reports"


def data_root() -> Path:
    """``$NBUTILS_DATA``, else the checkout's ``data/``, else ``~/.cache/nbutils``: a cache, kept out
    of the student's folder and shared by every notebook, wherever it runs."""
    if os.environ.get("NBUTILS_DATA"):
        return Path(os.environ["NBUTILS_DATA"]).expanduser()
    repo = checkout()
    return repo / "data" if repo else Path.home() / ".cache" / "nbutils"
