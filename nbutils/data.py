"""Fashion-MNIST: finding the files, checking them, and my_utils' loaders (and the fast path's).

Where the data comes from, the first that works: ``root`` (a notebook's ``data_root``; else
:func:`~nbutils.paths.data_root`) when it holds torchvision's ``FashionMNIST/raw`` files; Debian's
``dataset-fashion-mnist`` package, decompressed there; torchvision's download (what Colab uses).
Every file is checked (IDX header, counts, SHA-256 of the decompressed bytes) as it is read, and
written under a temporary name and renamed, so that a crash leaves nothing half-written.
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
from .paths import data_root

__all__ = ["CLASS_NAMES", "FASHION_MNIST", "N_TEST", "N_TRAIN", "DatasetError", "DatasetSpec",
           "DeviceLoader", "get_dataloader_workers", "get_fashion_mnist_labels",
           "load_data_fashion_mnist", "load_data_fashion_mnist_device", "load_split",
           "load_subsets", "pixel_stats", "prepare_fashion_mnist", "subset_indices",
           "verify_fashion_mnist"]

CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat",
               "sandal", "shirt", "sneaker", "bag", "ankle boot")
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


# Digests of the decompressed IDX files: the gzip bytes differ between mirrors (Debian recompresses).
FASHION_MNIST = DatasetSpec(60_000, 10_000, {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
})
N_TRAIN, N_TEST = FASHION_MNIST.n_train, FASHION_MNIST.n_test  # 60,000 and 10,000 images
RAW_FILES = tuple(FASHION_MNIST.sha256)


def get_fashion_mnist_labels(labels):
    """Text labels of Fashion-MNIST (my_utils' name and signature)."""
    return [CLASS_NAMES[int(i)] for i in labels]


def get_dataloader_workers():
    """Worker processes for the DataLoader: never more than the machine has, one core left to train
    (my_utils: always 4, more than Colab's 2 cores)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


# ----------------------------------------------------------------------------- reading the files
def raw_folder(root) -> Path:
    return Path(root) / "FashionMNIST" / "raw"


def read_idx(path: Path, kind: str, spec: DatasetSpec) -> torch.Tensor:
    """One IDX file as a uint8 tensor, refusing anything that is not the split it claims to be."""
    blob, name = path.read_bytes(), path.name
    remedy = f"delete {path} and run again to fetch a fresh copy"
    ndim = 3 if kind == "images" else 1
    header = 4 + 4 * ndim
    if len(blob) < header or int.from_bytes(blob[:4], "big") != {"images": 2051, "labels": 2049}[kind]:
        raise DatasetError(f"{path}: not an IDX {kind} file (bad header); {remedy}.")
    dims = [int.from_bytes(blob[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if dims[0] != spec.count(name):
        raise DatasetError(f"{path}: holds {dims[0]} {kind}, expected {spec.count(name)}; {remedy}.")
    if kind == "images" and dims[1:] != [28, 28]:
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
    raw = raw_folder(root or data_root())  # "" too: a notebook's data_root parameter left empty
    prefix = "train" if train else "t10k"
    images = read_idx(raw / f"{prefix}-images-idx3-ubyte", "images", spec)
    labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte", "labels", spec).long()
    if labels.max() >= len(CLASS_NAMES):
        raise DatasetError(f"{raw / (prefix + '-labels-idx1-ubyte')}: label {int(labels.max())} is not a "
                           f"class (0..9); delete it and run again.")
    per_class = torch.bincount(labels, minlength=len(CLASS_NAMES))
    if train and spec.balanced and not bool((per_class == per_class[0]).all()):
        raise DatasetError(f"{raw / 'train-labels-idx1-ubyte'}: classes are unbalanced "
                           f"({per_class.tolist()}), expected {spec.n_train // 10} each; delete it "
                           f"and run again.")
    return images, labels


# ----------------------------------------------------------------------------- getting the files
def missing(raw: Path):
    return [name for name in RAW_FILES if not (raw / name).exists()]


def write_checked(raw: Path, name: str, payload: bytes, spec: DatasetSpec):
    """Write ``payload`` as ``raw/name`` only once its checksum holds; never leave a partial file."""
    digest = spec.sha256.get(name)
    if digest and hashlib.sha256(payload).hexdigest() != digest:
        raise DatasetError(f"{name}: checksum of the decompressed source does not match the dataset")
    atomic_write_bytes(raw / name, payload)


def debian_files():
    """The package's ``*.gz`` files by raw name, found with ``dpkg -L`` (else in its usual folder)."""
    try:
        listed = subprocess.run(["dpkg", "-L", DEBIAN_PACKAGE], capture_output=True, text=True,
                                timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        listed = []
    found = {}
    for path in [Path(p) for p in listed if p.endswith("-ubyte.gz")] + \
            [DEBIAN_DIR / f"{name}.gz" for name in RAW_FILES]:
        if path.name[:-3] in RAW_FILES and path.is_file():
            found.setdefault(path.name[:-3], path)
    return found


def from_debian(root: Path, raw: Path, spec: DatasetSpec):
    sources = debian_files()
    absent = [n for n in missing(raw) if n not in sources]
    if absent:
        raise DatasetError(f"package {DEBIAN_PACKAGE} not installed (no {', '.join(absent)})")
    for name in missing(raw):
        try:
            payload = gzip.decompress(sources[name].read_bytes())
        except (OSError, EOFError) as e:
            raise DatasetError(f"{sources[name]}: unreadable gzip ({e})") from e
        write_checked(raw, name, payload, spec)


def from_torchvision(root: Path, raw: Path, spec: DatasetSpec):
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:
        try:
            FashionMNIST(tmp, train=True, download=True)
            FashionMNIST(tmp, train=False, download=True)
        except Exception as e:  # torchvision raises RuntimeError/URLError/OSError depending on the mirror
            raise DatasetError(f"torchvision download failed ({type(e).__name__}: {e})") from e
        for name in missing(raw):
            write_checked(raw, name, (raw_folder(tmp) / name).read_bytes(), spec)


def prepare_fashion_mnist(root=None, download=True, spec: DatasetSpec = FASHION_MNIST) -> Path:
    """Make sure ``root`` holds the dataset's files and return ``root``; raises
    :class:`DatasetError` naming every place tried when they cannot be had."""
    root = Path(root).expanduser() if root else data_root()  # "" too, as in load_split
    raw = raw_folder(root)
    if not missing(raw):
        return root  # load_split checks every file as it reads it
    try:
        raw.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=raw).close()
    except OSError as e:
        raise DatasetError(f"data root {root} is not writable ({e.strerror}); set the notebook's "
                           f"data_root parameter (root= in code, or $NBUTILS_DATA) to a writable "
                           f"folder") from e
    tried = [f"{raw}: missing {', '.join(missing(raw))}"]
    sources = [("Debian package", from_debian)] + \
        ([("torchvision download", from_torchvision)] if download else [])
    for label, fetch in sources:
        try:
            fetch(root, raw, spec)
            return root
        except DatasetError as e:
            tried.append(f"{label}: {e}")
    raise DatasetError(
        "Fashion-MNIST not found. Tried:\n  - " + "\n  - ".join(tried) +
        f"\nGet it with `apt-get install {DEBIAN_PACKAGE}` (offline, as root), with internet access "
        f"for torchvision's download, or set the notebook's data_root parameter (root= in code, or "
        f"$NBUTILS_DATA) to a folder holding FashionMNIST/raw/.")


def verify_fashion_mnist(root=None, download=True, spec: DatasetSpec = FASHION_MNIST) -> Path:
    """:func:`prepare_fashion_mnist`, then read both splits once (about a second), so that a corrupt
    file is refused before a caller starts work that would stop at its first read."""
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
    mean = (counts * values).sum() / counts.sum()
    var = (counts * (values - mean) ** 2).sum() / (counts.sum() - 1)
    return float(mean), float(var.sqrt())


def subset_indices(n_total: int, n: int, seed: int = 0) -> torch.Tensor:
    """The first ``n`` of a seeded permutation of ``range(n_total)``; ``n == 0`` means all, in order."""
    if n < 0 or n > n_total:
        raise ValueError(f"subset size must be between 0 (all) and {n_total}, got {n}")
    if n == 0:
        return torch.arange(n_total)
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]


def load_subsets(root=None, train_subset=0, test_subset=0, seed=0, download=True,
                 spec: DatasetSpec = FASHION_MNIST):
    """``((train images, labels), (test images, labels))``: seeded subsets (0: all) of the checked
    splits, and the mean and std of the *full* training set's pixels, as the coursework normalised."""
    root = prepare_fashion_mnist(root, download, spec)
    splits = []
    for train, n in ((True, train_subset), (False, test_subset)):
        images, labels = load_split(root, train, spec)
        if train:
            stats = pixel_stats(images)
        keep = subset_indices(len(labels), n, seed)
        splits.append((images[keep], labels[keep]))
    return splits, stats


def check_batch_size(batch_size, name="batch_size"):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"{name} must be a positive integer, got {batch_size!r}")


# ----------------------------------------------------------------------------- my_utils' loaders
class TensorImages(data.Dataset):
    """uint8 images as my_utils' ``torchvision.datasets.FashionMNIST`` gives them: Resize (of the PIL
    image, as there) when ``resize``, ToTensor, then ``transform`` (a tensor transform) if any."""

    def __init__(self, images, labels, resize=None, transform=None):
        self.images, self.labels, self.transform = images, labels, transform
        self.pil = transforms.Compose([transforms.Resize(resize), transforms.ToTensor()]) if resize else None

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        if self.pil:
            x = self.pil(Image.fromarray(self.images[i].numpy()))
        else:  # ToTensor's very floats without a PIL image per sample: an epoch's data several times faster
            x = self.images[i].unsqueeze(0).float().div(255)
        return (self.transform(x) if self.transform else x), int(self.labels[i])


def load_data_fashion_mnist(batch_size, resize=None, root=None, num_workers=None,
                            train_subset=0, test_subset=0, seed=0, download=True, normalize=False,
                            spec: DatasetSpec = FASHION_MNIST):
    """``(train_iter, test_iter)`` as in my_utils: ToTensor (+Resize), pixels in 0 ... 1, train
    shuffled, test not. ``normalize=True`` adds the coursework's Normalize with the training pixels'
    mean and std; ``train_subset``/``test_subset`` keep a seeded random subset of that size (0: all).

    Unlike my_utils, the files come from ``root`` (default: the data root, not ``../data`` under the
    current directory), checked, and the shuffle is seeded by ``seed``, so that a run repeats."""
    check_batch_size(batch_size)
    (train, test), (mean, std) = load_subsets(root, train_subset, test_subset, seed, download, spec)
    trans = transforms.Normalize((mean,), (std,)) if normalize else None
    workers = get_dataloader_workers() if num_workers is None else num_workers
    return (data.DataLoader(TensorImages(*train, resize, trans), batch_size, shuffle=True,
                            num_workers=workers, generator=torch.Generator().manual_seed(seed)),
            data.DataLoader(TensorImages(*test, resize, trans), batch_size, shuffle=False,
                            num_workers=workers))


# ----------------------------------------------------------------------------- the fast path's loader
class DeviceLoader:
    """A whole split held on the device as one uint8 tensor, served in batches by index.

    Each epoch draws a fresh permutation from its own seeded generator, so runs repeat. Normalisation
    happens on the device; there is no per-batch host-to-device copy. The last partial batch is kept
    unless ``drop_last``.
    """

    def __init__(self, images, labels, batch_size, shuffle, mean, std, device="cpu", seed=0,
                 drop_last=False):
        check_batch_size(batch_size)
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

    def index_buffer(self):
        """Where a CUDA graph reads each batch's indices from (:class:`~nbutils.fast.FastTrainer`)."""
        return torch.arange(self.batch_size, device=self.device)

    def __iter__(self):
        for idx in self.batch_indices():
            yield self.batch(idx)


def load_data_fashion_mnist_device(batch_size=128, device=None, root=None, train_subset=0,
                                   test_subset=0, seed=0, download=True, drop_last=False,
                                   spec: DatasetSpec = FASHION_MNIST, eval_batch_size=None):
    """Like :func:`load_data_fashion_mnist`, but both splits live on ``device`` (:class:`DeviceLoader`).

    ``eval_batch_size`` (default ``batch_size``) batches the test split only: evaluation has no
    dropout and BatchNorm uses its running statistics, so its batch size changes nothing but speed.
    """
    check_batch_size(batch_size)
    eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
    check_batch_size(eval_batch_size, "eval_batch_size")
    device = resolve_device(device)
    (train, test), (mean, std) = load_subsets(root, train_subset, test_subset, seed, download, spec)
    return (DeviceLoader(*train, batch_size, True, mean, std, device, seed, drop_last),
            DeviceLoader(*test, eval_batch_size, False, mean, std, device, seed))
