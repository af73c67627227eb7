"""Fashion-MNIST: finding the files, checking them, and feeding them to a model.

Where the data comes from, in order (the first that works wins):

1. an explicit root (the ``root`` argument, else the ``NBUTILS_DATA`` environment variable),
   else ``<repository>/data``; if it already holds torchvision's ``FashionMNIST/raw`` layout, use it;
2. Debian's ``dataset-fashion-mnist`` package, decompressed into that layout;
3. torchvision's download (what Colab uses).

Every file is checked (IDX header, counts, SHA-256 of the decompressed bytes) before it is used,
and every file is written under a temporary name and renamed, so a crash leaves nothing half-written.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import torch
from PIL import Image
from torch.utils import data
from torchvision import transforms
from torchvision.datasets import FashionMNIST

from .devices import resolve_device
from .io import atomic_write_bytes

__all__ = [
    "CLASS_NAMES", "FASHION_MNIST", "DatasetError", "DatasetSpec", "DeviceLoader",
    "get_dataloader_workers", "get_fashion_mnist_labels", "load_data_fashion_mnist",
    "load_data_fashion_mnist_device", "load_split", "pixel_stats", "prepare_fashion_mnist",
    "stratified_split", "subset_indices", "verify_fashion_mnist",
]

CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat",
               "sandal", "shirt", "sneaker", "bag", "ankle boot")
IMAGE_SIZE = 28
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


class DatasetError(ValueError):
    """The dataset is missing, corrupt or cannot be written; the message says which file and what to do."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a complete split looks like. Tests use a tiny spec with their own IDX files."""
    n_train: int
    n_test: int
    sha256: dict = dataclasses.field(default_factory=dict)  # raw file name -> digest; empty: no digest check
    balanced: bool = True  # every class equally frequent in the training split

    def count(self, filename: str) -> int:
        return self.n_train if filename.startswith("train") else self.n_test


# Digests of the decompressed IDX files. The gzip bytes differ between mirrors (Debian recompresses);
# the decompressed bytes are the dataset itself.
FASHION_MNIST = DatasetSpec(60_000, 10_000, {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
})
RAW_FILES = tuple(FASHION_MNIST.sha256)
_MAGIC = {"images": 2051, "labels": 2049}


def get_fashion_mnist_labels(labels):
    """Text labels of Fashion-MNIST (my_utils' name and signature)."""
    return [CLASS_NAMES[int(i)] for i in labels]


def get_dataloader_workers():
    """Worker processes for the DataLoader: never more than the machine has, one core left to train."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


# ----------------------------------------------------------------------------- finding the files
def default_root() -> Path:
    """``NBUTILS_DATA`` if set, else ``data/`` at the repository root (not the current directory)."""
    if os.environ.get("NBUTILS_DATA"):
        return Path(os.environ["NBUTILS_DATA"]).expanduser()
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").exists():
        return repo / "data"
    return Path.home() / ".cache" / "nbutils" / "data"


def raw_folder(root) -> Path:
    return Path(root) / "FashionMNIST" / "raw"


def _read_idx(path: Path, kind: str, spec: DatasetSpec) -> torch.Tensor:
    """Parse one IDX file into a uint8 tensor, refusing anything that is not the split it claims to be."""
    name = path.name
    blob = path.read_bytes()
    remedy = f"delete {path} and run again to fetch a fresh copy"
    ndim = 3 if kind == "images" else 1
    header = 4 + 4 * ndim
    if len(blob) < header or int.from_bytes(blob[:4], "big") != _MAGIC[kind]:
        raise DatasetError(f"{path}: not an IDX {kind} file (bad header); {remedy}.")
    dims = [int.from_bytes(blob[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if dims[0] != spec.count(name):
        raise DatasetError(f"{path}: holds {dims[0]} {kind}, expected {spec.count(name)}; {remedy}.")
    if kind == "images" and dims[1:] != [IMAGE_SIZE, IMAGE_SIZE]:
        raise DatasetError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28; {remedy}.")
    expected_len = header + int(torch.tensor(dims).prod())
    if len(blob) != expected_len:
        raise DatasetError(f"{path}: {len(blob)} bytes, expected {expected_len} (truncated?); {remedy}.")
    digest = spec.sha256.get(name)
    if digest and hashlib.sha256(blob).hexdigest() != digest:
        raise DatasetError(f"{path}: checksum mismatch (corrupt bytes); {remedy}.")
    return torch.frombuffer(bytearray(blob[header:]), dtype=torch.uint8).reshape(dims)


def load_split(root=None, train=True, spec: DatasetSpec = FASHION_MNIST):
    """The checked ``(images uint8 (N, 28, 28), labels int64 (N,))`` of one split."""
    raw = raw_folder(root if root is not None else default_root())
    prefix = "train" if train else "t10k"
    images = _read_idx(raw / f"{prefix}-images-idx3-ubyte", "images", spec)
    labels = _read_idx(raw / f"{prefix}-labels-idx1-ubyte", "labels", spec).long()
    if labels.max() >= len(CLASS_NAMES):
        raise DatasetError(f"{raw / (prefix + '-labels-idx1-ubyte')}: label {int(labels.max())} is not a "
                           f"class (0..9); delete it and run again.")
    if train and spec.balanced:
        per_class = torch.bincount(labels, minlength=len(CLASS_NAMES))
        if not bool((per_class == per_class[0]).all()):
            raise DatasetError(f"{raw / 'train-labels-idx1-ubyte'}: classes are unbalanced "
                               f"({per_class.tolist()}), expected {spec.n_train // 10} each; "
                               f"delete it and run again.")
    return images, labels


def _missing(raw: Path):
    return [name for name in RAW_FILES if not (raw / name).exists()]


def _write_checked(raw: Path, name: str, payload: bytes, spec: DatasetSpec):
    """Write ``payload`` as ``raw/name`` only once its checksum holds; never leave a partial file."""
    digest = spec.sha256.get(name)
    if digest and hashlib.sha256(payload).hexdigest() != digest:
        raise DatasetError(f"{name}: checksum of the decompressed source does not match the dataset")
    atomic_write_bytes(raw / name, payload)


def debian_files():
    """The package's ``*.gz`` files by raw name, found with ``dpkg -L`` (falling back to its usual folder)."""
    try:
        listed = subprocess.run(["dpkg", "-L", DEBIAN_PACKAGE], capture_output=True, text=True,
                                timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        listed = []
    candidates = [Path(p) for p in listed if p.endswith("-ubyte.gz")]
    candidates += [DEBIAN_DIR / f"{name}.gz" for name in RAW_FILES]
    found = {}
    for path in candidates:
        name = path.name[:-3]
        if name in RAW_FILES and name not in found and path.is_file():
            found[name] = path
    return found


def _from_debian(raw: Path, spec: DatasetSpec):
    sources = debian_files()
    missing = [n for n in _missing(raw) if n not in sources]
    if missing:
        raise DatasetError(f"package {DEBIAN_PACKAGE} not installed (no {', '.join(missing)})")
    for name in _missing(raw):
        try:
            payload = gzip.decompress(sources[name].read_bytes())
        except (OSError, EOFError) as e:
            raise DatasetError(f"{sources[name]}: unreadable gzip ({e})") from e
        _write_checked(raw, name, payload, spec)


def _from_torchvision(root: Path, raw: Path, spec: DatasetSpec):
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:
        try:
            FashionMNIST(tmp, train=True, download=True)
            FashionMNIST(tmp, train=False, download=True)
        except Exception as e:  # torchvision raises RuntimeError/URLError/OSError depending on the mirror
            raise DatasetError(f"torchvision download failed ({type(e).__name__}: {e})") from e
        for name in _missing(raw):
            _write_checked(raw, name, (raw_folder(tmp) / name).read_bytes(), spec)


def prepare_fashion_mnist(root=None, download=True, spec: DatasetSpec = FASHION_MNIST) -> Path:
    """Make sure ``root`` holds a checked copy of the dataset and return ``root``.

    Raises :class:`DatasetError` naming every place tried when the data cannot be had.
    """
    root = Path(root).expanduser() if root is not None else default_root()
    raw = raw_folder(root)
    if not _missing(raw):
        return root  # load_split checks every file as it reads it
    try:
        raw.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=raw)
        probe.close()
    except OSError as e:
        raise DatasetError(f"data root {root} is not writable ({e.strerror}); point NBUTILS_DATA or "
                           f"root= at a writable folder") from e
    tried = [f"{raw}: missing {', '.join(_missing(raw))}"]
    sources = [("Debian package", _from_debian)]
    if download:
        sources.append(("torchvision download", lambda r, s: _from_torchvision(root, r, s)))
    for label, fetch in sources:
        try:
            fetch(raw, spec)
            return root
        except DatasetError as e:
            tried.append(f"{label}: {e}")
    raise DatasetError(
        "Fashion-MNIST not found. Tried:\n  - " + "\n  - ".join(tried) +
        f"\nGet it with `apt-get install {DEBIAN_PACKAGE}` (offline, as root), with internet access "
        f"for torchvision's download, or point NBUTILS_DATA at a folder holding FashionMNIST/raw/.")


def verify_fashion_mnist(root=None, download=True, spec: DatasetSpec = FASHION_MNIST) -> Path:
    """:func:`prepare_fashion_mnist`, then read both splits once (about a second), so that a truncated
    or corrupt file is refused before a caller starts work that would stop at its first read."""
    root = prepare_fashion_mnist(root, download, spec)
    for train in (True, False):
        load_split(root, train, spec)
    return root


# ----------------------------------------------------------------------------- statistics and subsets
def pixel_stats(images: torch.Tensor):
    """Mean and standard deviation of uint8 pixels on the [0, 1] scale (training set: 0.2860, 0.3530)."""
    # From the 256-bin histogram: exact, and no float copy of 47 M pixels.
    counts = torch.bincount(images.flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    n = counts.sum()
    mean = (counts * values).sum() / n
    var = (counts * (values - mean) ** 2).sum() / (n - 1)
    return float(mean), float(var.sqrt())


def subset_indices(n_total: int, n: int, seed: int = 0) -> torch.Tensor:
    """The first ``n`` of a seeded permutation of ``range(n_total)``; ``n == 0`` means all, in order."""
    if n < 0 or n > n_total:
        raise ValueError(f"subset size must be between 0 (all) and {n_total}, got {n}")
    if n == 0:
        return torch.arange(n_total)
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]


def _check_batch_size(batch_size, name="batch_size"):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"{name} must be a positive integer, got {batch_size!r}")


VAL_SEED = 0  # one held-out set for every run, so runs differ only by their own seed


def stratified_split(labels: torch.Tensor, n_val: int, seed: int = VAL_SEED):
    """``(kept, held_out)`` index tensors: ``n_val`` images held out, each class in its share.

    Quotas are the classes' proportions of ``n_val``, rounded down, with the remainder going to the
    largest fractions; within a class the images are a seeded random draw.
    """
    if isinstance(n_val, bool) or not isinstance(n_val, int) or not 0 < n_val < len(labels):
        raise ValueError(f"val_size must be an integer between 1 and {len(labels) - 1} (the training "
                         f"images available), got {n_val!r}")
    classes, counts = labels.unique(return_counts=True)
    share = counts.double() * n_val / len(labels)
    quota = share.floor().long()
    quota[(share - quota).argsort(descending=True)[:n_val - int(quota.sum())]] += 1
    generator = torch.Generator().manual_seed(seed)
    held = []
    for c, q in zip(classes, quota):
        members = (labels == c).nonzero().flatten()
        held.append(members[torch.randperm(len(members), generator=generator)[:q]])
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[torch.cat(held)] = False
    return keep.nonzero().flatten(), (~keep).nonzero().flatten()


def _checked_subsets(root, download, spec, train_subset, test_subset, seed, val_size=0):
    """The splits (seeded subsets) and the training pixels' mean and std.

    Without ``val_size``: ``(train, test, stats)``, stats from the *full* training set as in the
    coursework. With it: ``(train, val, test, stats)``, the stratified held-out images taken out of
    the training subset, and the stats from the images that remain for training.
    """
    root = prepare_fashion_mnist(root, download, spec)
    (x_train, y_train), (x_test, y_test) = load_split(root, True, spec), load_split(root, False, spec)
    i_train = subset_indices(len(y_train), train_subset, seed)
    i_test = subset_indices(len(y_test), test_subset, seed)
    train, test = (x_train[i_train], y_train[i_train]), (x_test[i_test], y_test[i_test])
    if not val_size:
        return train, test, pixel_stats(x_train)
    kept, held = stratified_split(train[1], val_size)
    return ((train[0][kept], train[1][kept]), (train[0][held], train[1][held]), test,
            pixel_stats(train[0][kept]))


# ----------------------------------------------------------------------------- my_utils' loaders
class _TensorImages(data.Dataset):
    """uint8 images with a torchvision transform per sample, like ``torchvision.datasets.FashionMNIST``."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i].numpy(), mode="L")), int(self.labels[i])


def load_data_fashion_mnist(batch_size=128, resize=None, root=None, num_workers=None,
                            train_subset=0, test_subset=0, seed=0, download=True,
                            spec: DatasetSpec = FASHION_MNIST, val_size=0):
    """``(train_iter, test_iter)`` as in my_utils: ToTensor (+Resize) + Normalize, train shuffled, test not.

    Normalize uses the training set's own mean and std (:func:`pixel_stats`).
    ``train_subset``/``test_subset`` keep a seeded random subset of that size (0: all).
    ``val_size > 0`` holds that many training images out (:func:`stratified_split`) and returns
    ``(train_iter, val_iter, test_iter)``.
    """
    _check_batch_size(batch_size)
    *splits, (mean, std) = _checked_subsets(root, download, spec, train_subset, test_subset, seed,
                                            val_size)
    trans = [transforms.ToTensor(), transforms.Normalize((mean,), (std,))]
    if resize:
        trans.insert(0, transforms.Resize(resize))
    trans = transforms.Compose(trans)
    workers = get_dataloader_workers() if num_workers is None else num_workers
    train, *held_out = [_TensorImages(*split, trans) for split in splits]
    return (data.DataLoader(train, batch_size, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(seed)),
            *(data.DataLoader(d, batch_size, shuffle=False, num_workers=workers) for d in held_out))


# ----------------------------------------------------------------------------- the GPU-resident loader
class DeviceLoader:
    """A whole split held on the device as one uint8 tensor, served in batches by index.

    Each epoch draws a fresh permutation from its own seeded generator, so runs repeat. Normalisation
    happens on the device; there is no per-batch host-to-device copy. The last partial batch is kept
    unless ``drop_last``.
    """

    def __init__(self, images, labels, batch_size, shuffle, mean, std, device="cpu", seed=0,
                 drop_last=False):
        _check_batch_size(batch_size)
        self.device = torch.device(device)
        self.images = images.to(self.device, torch.uint8).unsqueeze(1)  # (N, 1, 28, 28)
        self.labels = labels.to(self.device, torch.long)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.mean, self.std = mean, std
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def dataset(self):  # DataLoader-like: ``len(loader.dataset)`` is the number of images
        return self.labels

    def normalize(self, images_uint8):
        return (images_uint8.float() / 255 - self.mean) / self.std

    def batch_indices(self):
        """This epoch's batches as index tensors on the device (the fast path gathers inside its step)."""
        n = len(self.labels)
        order = (torch.randperm(n, generator=self.generator).to(self.device) if self.shuffle
                 else torch.arange(n, device=self.device))
        for b in range(len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size]

    def batch(self, idx):
        return self.normalize(self.images[idx]), self.labels[idx]

    def __iter__(self):
        for idx in self.batch_indices():
            yield self.batch(idx)


def load_data_fashion_mnist_device(batch_size=128, device=None, root=None, train_subset=0,
                                   test_subset=0, seed=0, download=True, drop_last=False,
                                   spec: DatasetSpec = FASHION_MNIST, eval_batch_size=None,
                                   val_size=0):
    """Like :func:`load_data_fashion_mnist`, but both splits live on ``device`` (:class:`DeviceLoader`).

    ``eval_batch_size`` (default ``batch_size``) batches the test split only: evaluation has no
    dropout and BatchNorm uses its running statistics, so its batch size changes nothing but speed.
    ``val_size > 0`` returns ``(train_iter, val_iter, test_iter)`` as in :func:`load_data_fashion_mnist`.
    """
    _check_batch_size(batch_size)
    eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
    _check_batch_size(eval_batch_size, "eval_batch_size")
    device = resolve_device(device)
    train_split, *held_out, (mean, std) = _checked_subsets(root, download, spec, train_subset,
                                                           test_subset, seed, val_size)
    return (DeviceLoader(*train_split, batch_size, True, mean, std, device, seed, drop_last),
            *(DeviceLoader(*split, eval_batch_size, False, mean, std, device, seed)
              for split in held_out))
