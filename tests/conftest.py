"""Shared fixtures: tiny IDX datasets written by the tests themselves, and the real data when installed."""
import gzip
import os
import tempfile
from pathlib import Path

import pytest
import torch

# Set before any nbval kernel starts (kernels inherit the environment): the smoke profile, and run
# folders in a temporary place rather than the repository's reports/. nbval's and papermill's kernels
# see no frontend by themselves (nbutils.has_frontend), as a user's would.
os.environ.setdefault("NBUTILS_PROFILE", "smoke")
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # pytest-xdist: one process per core, each its own
if WORKER:  # and one thread each, in its kernels and subprocesses too (their rounding then agrees)
    os.environ["NBUTILS_REPORTS"] = tempfile.mkdtemp(prefix=f"nbutils-reports-{WORKER}-")
    os.environ["OMP_NUM_THREADS"] = "1"
else:
    os.environ.setdefault("NBUTILS_REPORTS", tempfile.mkdtemp(prefix="nbutils-reports-"))
torch.set_num_threads(1 if WORKER else max(1, min(2, os.cpu_count() or 1)))

import nbutils as nb  # noqa: E402
import nbval_reference  # noqa: E402
from nbutils import data as nbdata  # noqa: E402

TINY = nb.DatasetSpec(n_train=200, n_test=100)


def idx_bytes(tensor, kind):
    """Encode a uint8 tensor as an IDX file (the format of the four Fashion-MNIST files)."""
    magic = 2051 if kind == "images" else 2049
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in tensor.shape)
    return header + tensor.to(torch.uint8).contiguous().numpy().tobytes()


def learnable_split(n, seed):
    """Images whose class shows as a bright horizontal band: a model can learn it in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.randint(0, 60, (n, 28, 28), generator=g)
    for c in range(10):
        images[labels == c, 2 + 2 * c: 4 + 2 * c, :] = 250
    return images.to(torch.uint8), labels.to(torch.uint8)


def tiny_files(spec=TINY):
    """Raw file name -> IDX bytes of a tiny, balanced, learnable dataset."""
    files = {}
    for prefix, n, seed in (("train", spec.n_train, 0), ("t10k", spec.n_test, 1)):
        images, labels = learnable_split(n, seed)
        files[f"{prefix}-images-idx3-ubyte"] = idx_bytes(images, "images")
        files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(labels, "labels")
    return files


def write_raw(root, files):
    raw = nbdata.raw_folder(root)
    raw.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():
        (raw / name).write_bytes(payload)
    return Path(root)


@pytest.fixture
def tiny_root(tmp_path):
    """A data root holding a tiny dataset in torchvision's raw layout."""
    return write_raw(tmp_path / "data", tiny_files())


@pytest.fixture
def tiny_gz_dir(tmp_path):
    """A folder of gzip files laid out like Debian's dataset-fashion-mnist package."""
    folder = tmp_path / "debian"
    folder.mkdir()
    for name, payload in tiny_files().items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
    return folder


@pytest.fixture
def no_system_data(monkeypatch):
    """Hide the Debian package, so a test sees only what it sets up itself."""
    monkeypatch.setattr(nbdata, "debian_files", lambda: {})


@pytest.fixture(scope="session")
def real_root():
    """The real Fashion-MNIST, if this machine has it (installed by .ci/run); else the test skips."""
    try:
        return nb.prepare_fashion_mnist(download=False)
    except nb.DatasetError as e:
        pytest.skip(f"real Fashion-MNIST not available: {e}")


def pytest_configure(config):
    """Write the nbval reference notebooks (tests/nbval/) before pytest collects them (once: under
    pytest-xdist its workers collect what the controller wrote)."""
    if not WORKER:
        nbval_reference.build()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
