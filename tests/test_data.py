"""nbutils.data: finding, checking and loading Fashion-MNIST; the loaders; patches."""
import functools
import gzip
import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch

import nbutils as nb
from nbutils import data as nbdata
from conftest import TINY, tiny_files, write_raw


# ----------------------------------------------------------------------------- reading and checking
def test_load_split_reads_tiny_idx(tiny_root):
    images, labels = nb.load_split(tiny_root, train=True, spec=TINY)
    assert images.shape == (200, 28, 28) and images.dtype == torch.uint8
    assert labels.tolist() == [i % 10 for i in range(200)]


def test_labels_and_class_names():
    assert nb.get_fashion_mnist_labels(torch.tensor([0, 9, 5])) == ["t-shirt", "ankle boot", "sandal"]
    assert len(nb.CLASS_NAMES) == 10


def test_pixel_stats_match_direct_computation(tiny_root):
    images, _ = nb.load_split(tiny_root, spec=TINY)
    mean, std = nb.pixel_stats(images)
    x = images.double() / 255
    assert mean == pytest.approx(float(x.mean()), abs=1e-12)
    assert std == pytest.approx(float(x.std()), abs=1e-12)


def test_existing_layout_is_used_first(tiny_root, monkeypatch):
    monkeypatch.setattr(nbdata, "debian_files", lambda: pytest.fail("must not look further"))
    assert nb.prepare_fashion_mnist(tiny_root, download=False, spec=TINY) == tiny_root


def test_root_from_environment(tiny_root, monkeypatch):
    monkeypatch.setenv("NBUTILS_DATA", str(tiny_root))
    assert nbdata.data_root() == tiny_root
    assert nb.load_split(spec=TINY)[0].shape[0] == 200
    # A notebook's data_root parameter left empty ("") means the same default, not the current folder.
    assert nb.prepare_fashion_mnist("", download=False, spec=TINY) == tiny_root
    assert nb.load_split("", spec=TINY)[0].shape[0] == 200


def test_debian_files_are_decompressed_atomically(tmp_path, tiny_gz_dir, monkeypatch):
    monkeypatch.setattr(nbdata, "debian_files",
                        lambda: {p.name[:-3]: p for p in tiny_gz_dir.glob("*.gz")})
    spec = nb.DatasetSpec(200, 100, {n: hashlib.sha256(b).hexdigest() for n, b in tiny_files().items()})
    root = nb.prepare_fashion_mnist(tmp_path / "fresh", download=False, spec=spec)
    raw = nbdata.raw_folder(root)
    assert sorted(p.name for p in raw.iterdir()) == sorted(nbdata.RAW_FILES)  # no temporary left
    assert nb.load_split(root, False, spec)[0].shape == (100, 28, 28)


def test_debian_source_with_wrong_checksum_leaves_nothing(tmp_path, tiny_gz_dir, monkeypatch):
    monkeypatch.setattr(nbdata, "debian_files",
                        lambda: {p.name[:-3]: p for p in tiny_gz_dir.glob("*.gz")})
    spec = nb.DatasetSpec(200, 100, {n: "0" * 64 for n in nbdata.RAW_FILES})
    with pytest.raises(nb.DatasetError, match="checksum"):
        nb.prepare_fashion_mnist(tmp_path / "fresh", download=False, spec=spec)
    assert list(nbdata.raw_folder(tmp_path / "fresh").iterdir()) == []


@pytest.fixture
def local_mirror(tmp_path):
    """An HTTP server on loopback serving tiny gzip files, standing in for torchvision's mirror."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    resources = []
    for name, payload in tiny_files().items():
        gz = gzip.compress(payload)
        (mirror / f"{name}.gz").write_bytes(gz)
        resources.append((f"{name}.gz", hashlib.md5(gz).hexdigest()))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", resources
    server.shutdown()
    server.server_close()


def test_torchvision_download_path(tmp_path, monkeypatch, no_system_data, local_mirror):
    """torchvision's real download code against a local mirror (tests never touch the network)."""
    from torchvision.datasets import FashionMNIST
    url, resources = local_mirror
    monkeypatch.setattr(FashionMNIST, "mirrors", [url])
    monkeypatch.setattr(FashionMNIST, "resources", resources)
    root = nb.prepare_fashion_mnist(tmp_path / "online", download=True, spec=TINY)
    assert nb.load_split(root, True, TINY)[1].shape == (200,)
    assert [p.name for p in (tmp_path / "online").iterdir()] == ["FashionMNIST"]  # temp dir removed


def test_every_place_tried_is_named(tmp_path, monkeypatch, no_system_data, local_mirror):
    from torchvision.datasets import FashionMNIST
    monkeypatch.setattr(FashionMNIST, "mirrors", [local_mirror[0] + "missing/"])
    with pytest.raises(nb.DatasetError) as e:
        nb.prepare_fashion_mnist(tmp_path / "empty", download=True, spec=TINY)
    message = str(e.value)
    for place in ("missing train-images-idx3-ubyte", "Debian package", "torchvision download",
                  "apt-get install dataset-fashion-mnist", "data_root parameter", "NBUTILS_DATA"):
        assert place in message


@pytest.mark.parametrize("damage, expected", [
    (lambda b: b[:-100], "truncated"),
    (lambda b: b[:4] + (5).to_bytes(4, "big") + b[8:], "holds 5 images, expected 200"),
    (lambda b: b"\x00" * 4 + b[4:], "bad header"),
])
def test_damaged_raw_file_is_named_with_remedy(tiny_root, damage, expected):
    path = nbdata.raw_folder(tiny_root) / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(nb.DatasetError, match=expected) as e:
        nb.load_split(tiny_root, True, TINY)
    assert str(path) in str(e.value) and "delete" in str(e.value)


def test_corrupt_bytes_fail_the_checksum(tiny_root):
    path = nbdata.raw_folder(tiny_root) / "t10k-images-idx3-ubyte"
    good = path.read_bytes()
    spec = nb.DatasetSpec(200, 100, {path.name: hashlib.sha256(good).hexdigest()})
    path.write_bytes(good[:500] + bytes([good[500] ^ 0xFF]) + good[501:])
    with pytest.raises(nb.DatasetError, match="checksum mismatch"):
        nb.load_split(tiny_root, False, spec)


def test_label_file_disagreeing_with_image_file(tiny_root):
    files = tiny_files(nb.DatasetSpec(200, 90))
    (nbdata.raw_folder(tiny_root) / "t10k-labels-idx1-ubyte").write_bytes(files["t10k-labels-idx1-ubyte"])
    with pytest.raises(nb.DatasetError, match="holds 90 labels, expected 100"):
        nb.load_split(tiny_root, False, TINY)


def test_unbalanced_training_labels(tiny_root):
    path = nbdata.raw_folder(tiny_root) / "train-labels-idx1-ubyte"
    blob = bytearray(path.read_bytes())
    blob[8] = 3  # first label 0 -> 3
    path.write_bytes(bytes(blob))
    with pytest.raises(nb.DatasetError, match="unbalanced"):
        nb.load_split(tiny_root, True, TINY)


def test_truncated_debian_gzip_is_named(tmp_path, tiny_gz_dir, monkeypatch):
    bad = tiny_gz_dir / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:300])
    monkeypatch.setattr(nbdata, "debian_files",
                        lambda: {p.name[:-3]: p for p in tiny_gz_dir.glob("*.gz")})
    with pytest.raises(nb.DatasetError, match="unreadable gzip") as e:
        nb.prepare_fashion_mnist(tmp_path / "fresh", download=False, spec=TINY)
    assert str(bad) in str(e.value)
    leftovers = [p.name for p in nbdata.raw_folder(tmp_path / "fresh").iterdir()]
    assert "train-images-idx3-ubyte" not in leftovers and not any(n.startswith(".") for n in leftovers)


def test_unwritable_data_root_is_named(tmp_path, no_system_data):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(nb.DatasetError, match="not writable"):
        nb.prepare_fashion_mnist(blocker / "data", download=False, spec=TINY)


# ----------------------------------------------------------------------------- the loaders
def test_dataloaders_give_my_utils_pixels_and_normalise_with_training_stats_when_asked(tiny_root):
    raw = nb.load_split(tiny_root, False, TINY)[0][:32].float() / 255
    train_iter, test_iter = nb.load_data_fashion_mnist(32, root=tiny_root, num_workers=0, spec=TINY)
    X, _ = next(iter(test_iter))
    assert X.shape == (32, 1, 28, 28) and torch.allclose(X[:, 0], raw, atol=1e-6)  # my_utils: 0 ... 1
    assert sum(len(y) for _, y in train_iter) == 200
    mean, std = nb.pixel_stats(nb.load_split(tiny_root, True, TINY)[0])
    _, test_iter = nb.load_data_fashion_mnist(32, root=tiny_root, num_workers=0, spec=TINY,
                                              normalize=True)
    X, _ = next(iter(test_iter))
    assert torch.allclose(X[:, 0], (raw - mean) / std, atol=1e-6)


def test_subsets_are_seeded_and_sized(tiny_root):
    a, _ = nb.load_data_fashion_mnist(16, root=tiny_root, num_workers=0, train_subset=50, seed=3,
                                      spec=TINY)
    b, _ = nb.load_data_fashion_mnist(16, root=tiny_root, num_workers=0, train_subset=50, seed=3,
                                      spec=TINY)
    assert len(a.dataset) == 50
    assert torch.equal(a.dataset.labels, b.dataset.labels)
    with pytest.raises(ValueError, match="subset size must be between 0 .* and 200"):
        nb.load_data_fashion_mnist(16, root=tiny_root, train_subset=201, spec=TINY)


def test_device_loader_matches_dataloader_and_keeps_partial_batch(tiny_root):
    _, test_iter = nb.load_data_fashion_mnist(64, root=tiny_root, num_workers=0, spec=TINY,
                                              normalize=True)
    train_dev, test_dev = nb.load_data_fashion_mnist_device(64, "cpu", root=tiny_root, spec=TINY)
    assert len(test_dev) == 2 and [len(y) for _, y in test_dev] == [64, 36]
    for (X1, y1), (X2, y2) in zip(test_iter, test_dev):
        assert torch.allclose(X1, X2, atol=1e-6) and torch.equal(y1, y2)
    seen = torch.cat([y for _, y in train_dev])
    assert sorted(seen.tolist()) == sorted(train_dev.labels.tolist())  # each image once per epoch
    first, second = [torch.cat([X.flatten(1) for X, _ in train_dev]) for _ in range(2)]
    assert not torch.equal(first, second)  # reshuffled each epoch


def test_device_loader_is_reproducible(tiny_root):
    runs = [[y for _, y in nb.load_data_fashion_mnist_device(32, "cpu", root=tiny_root, seed=7,
                                                             spec=TINY)[0]] for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_device_loader_drop_last(tiny_root):
    train_dev, _ = nb.load_data_fashion_mnist_device(64, "cpu", root=tiny_root, drop_last=True,
                                                     spec=TINY)
    assert [len(y) for _, y in train_dev] == [64, 64, 64]


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_bad_batch_size_fails_before_any_work(tmp_path, batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        nb.load_data_fashion_mnist(batch_size, root=tmp_path / "never")
    with pytest.raises(ValueError, match="batch_size"):
        nb.load_data_fashion_mnist_device(batch_size, "cpu", root=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_real_dataset_integrity(real_root):
    images, labels = nb.load_split(real_root, True)
    assert images.shape == (60_000, 28, 28)
    assert torch.bincount(labels).tolist() == [6000] * 10
    assert nb.load_split(real_root, False)[0].shape == (10_000, 28, 28)
    mean, std = nb.pixel_stats(images)
    assert round(mean, 4) == 0.2860 and round(std, 4) == 0.3530


# ----------------------------------------------------------------------------- patches (notebook 01)
@pytest.mark.parametrize("p", [1, 2, 4, 7, 14, 28])
def test_patchify_keeps_every_pixel_once(p):
    images = torch.arange(3 * 28 * 28, dtype=torch.float32).reshape(3, 1, 28, 28)
    patches = nb.patchify(images, p)
    assert patches.shape == (3, (28 // p) ** 2, p * p)
    assert torch.equal(patches.flatten(1).sort().values, images.flatten(1))


def test_patchify_4_gives_49_row_major_patches():
    images = torch.arange(28 * 28).reshape(1, 1, 28, 28)
    patches = nb.patchify(images, 4)
    assert patches.shape == (1, 49, 16)
    assert patches[0, 1].tolist() == [4, 5, 6, 7, 32, 33, 34, 35, 60, 61, 62, 63, 88, 89, 90, 91]
    assert patches[0, 7].tolist()[:4] == [112, 113, 114, 115]  # the second strip starts at row 4


def test_one_missing_file_is_named(tiny_root, no_system_data):
    (nbdata.raw_folder(tiny_root) / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(nb.DatasetError, match="missing t10k-labels-idx1-ubyte") as e:
        nb.prepare_fashion_mnist(tiny_root, download=False, spec=TINY)
    assert "apt-get install dataset-fashion-mnist" in str(e.value)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder this process cannot write to: chmod for a normal user; root ignores modes, so /sys."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    folder = Path("/sys/fs")
    try:
        (folder / "nbutils-probe").mkdir()
    except OSError:
        yield folder
        return
    (folder / "nbutils-probe").rmdir()
    pytest.skip("no read-only folder available on this machine")


def test_read_only_data_directory(read_only_dir, no_system_data):
    with pytest.raises(nb.DatasetError, match=r"data root .* is not writable .*data_root parameter.*NBUTILS_DATA"):
        nb.prepare_fashion_mnist(read_only_dir / "fashion", download=False, spec=TINY)
    assert not (read_only_dir / "fashion").exists()
