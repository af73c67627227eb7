"""my_utils whole: every public name of d2l/torch.py (d2l-en 78c39a6c) before chapter 8 is in nbutils,
with my_utils' signature and behaviour; plain-function models; the data hub's offline refusal."""
import hashlib
import inspect
import os
import urllib.error
import urllib.request

import pytest
import torch
from torch import nn
from torchvision import transforms
from torchvision.datasets import FashionMNIST

import nbutils as d2l
from nbutils import d2l as book
from conftest import TINY

# The 2020 file's definitions, as stubs: nbutils keeps these parameters, in this order, with these
# defaults, and may add keyword parameters after them. train_ch6's default there, d2l.try_gpu(), was
# evaluated once at import; here None means the same, at each call.
MY_UTILS = '''
def mkdir_if_not_exist(path): ...
def use_svg_display(): ...
def set_figsize(figsize=(3.5, 2.5)): ...
def set_axes(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, legend): ...
def plot(X, Y=None, xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None, xscale='linear',
         yscale='linear', fmts=('-', 'm--', 'g-.', 'r:'), figsize=(3.5, 2.5), axes=None): ...
def Timer(): ...
def synthetic_data(w, b, num_examples): ...
def linreg(X, w, b): ...
def squared_loss(y_hat, y): ...
def sgd(params, lr, batch_size): ...
def load_array(data_arrays, batch_size, is_train=True): ...
def get_fashion_mnist_labels(labels): ...
def show_images(imgs, num_rows, num_cols, titles=None, scale=1.5): ...
def get_dataloader_workers(): ...
def load_data_fashion_mnist(batch_size, resize=None): ...
def accuracy(y_hat, y): ...
def evaluate_accuracy(net, data_iter): ...
def Accumulator(n): ...
def train_epoch_ch3(net, train_iter, loss, updater): ...
def Animator(xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None, xscale='linear',
             yscale='linear', fmts=('-', 'm--', 'g-.', 'r:'), nrows=1, ncols=1, figsize=(3.5, 2.5)): ...
def train_ch3(net, train_iter, test_iter, loss, num_epochs, updater): ...
def predict_ch3(net, test_iter, n=6): ...
def evaluate_loss(net, data_iter, loss): ...
def download(name, cache_dir=os.path.join('..', 'data')): ...
def download_extract(name, folder=None): ...
def download_all(): ...
def try_gpu(i=0): ...
def try_all_gpus(): ...
def corr2d(X, K): ...
def evaluate_accuracy_gpu(net, data_iter, device=None): ...
def train_ch6(net, train_iter, test_iter, num_epochs, lr, device=None): ...
def Residual(input_channels, num_channels, use_1x1conv=False, strides=1): ...
'''
# d2lbook's aliases from config.ini: d2l.name is torch.name (or the name after ->).
SIMPLE = {"ones": "ones", "zeros": "zeros", "tensor": "tensor", "arange": "arange",
          "meshgrid": "meshgrid", "sin": "sin", "sinh": "sinh", "cos": "cos", "cosh": "cosh",
          "tanh": "tanh", "linspace": "linspace", "exp": "exp", "log": "log", "normal": "normal",
          "matmul": "matmul", "int32": "int32", "float32": "float32", "concat": "cat",
          "stack": "stack", "abs": "abs"}
FLUENT = ["numpy", "size", "reshape", "to", "reduce_sum", "argmax", "astype", "transpose"]


def stubs():
    namespace = {"os": os}
    exec(MY_UTILS, namespace)
    return {name: f for name, f in namespace.items() if callable(f) and name != "os"}


@pytest.mark.parametrize("name", sorted(stubs()))
def test_my_utils_signature_is_kept(name):
    theirs = list(inspect.signature(stubs()[name]).parameters.values())
    ours = list(inspect.signature(getattr(d2l, name)).parameters.values())
    assert [(p.name, p.default) for p in ours[:len(theirs)]] == [(p.name, p.default) for p in theirs]
    assert all(p.default is not inspect.Parameter.empty for p in ours[len(theirs):]), \
        f"{name}: a parameter added after my_utils' must have a default"


def test_every_name_of_the_2020_file_is_there():
    names = set(stubs()) | set(SIMPLE) | set(FLUENT) | {"plt", "DATA_HUB", "DATA_URL"}
    assert len(names) == 63  # the 58 the issue counts, and the data hub's five
    assert [n for n in sorted(names) if not hasattr(d2l, n)] == []
    assert d2l.plt is __import__("matplotlib.pyplot").pyplot
    assert set(d2l.DATA_HUB) == {"kaggle_house_train", "kaggle_house_test"}
    assert d2l.DATA_URL == "http://d2l-data.s3-accelerate.amazonaws.com/"


def test_aliases_are_torchs_own():
    for ours, theirs in SIMPLE.items():
        assert getattr(d2l, ours) is getattr(torch, theirs), ours
    x = torch.arange(6.0, requires_grad=True).reshape(2, 3)
    assert d2l.numpy(x).tolist() == [[0, 1, 2], [3, 4, 5]] and d2l.size(x) == 6
    assert d2l.reshape(x, (3, 2)).shape == (3, 2) and d2l.transpose(x).shape == (3, 2)
    assert d2l.reduce_sum(x, 1).tolist() == [3, 12] and d2l.argmax(x, axis=1).tolist() == [2, 2]
    assert d2l.astype(x, torch.int32).dtype == torch.int32 and d2l.to(x, torch.float64).dtype == torch.float64


def test_a_star_import_never_shadows_builtins_or_modules():
    namespace = {}
    exec("from nbutils import *", namespace)
    assert not {"abs", "numpy", "size", "tensor"} & set(namespace)
    assert "synthetic_data" in namespace and "tensor" in dir(d2l)


def test_the_linear_regression_helpers():
    torch.manual_seed(0)
    true_w, true_b = d2l.tensor([2, -3.4]), 4.2
    features, labels = d2l.synthetic_data(true_w, true_b, 1000)
    assert features.shape == (1000, 2) and labels.shape == (1000, 1)
    assert (labels - d2l.linreg(features, true_w.reshape(2, 1), true_b)).abs().max() < 0.1
    w = torch.zeros(2, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    for epoch in range(3):  # the book's loop
        for X, y in d2l.load_array((features, labels), 10):
            d2l.squared_loss(d2l.linreg(X, w, b), y).sum().backward()
            d2l.sgd([w, b], 0.03, 10)
    assert (w.detach().flatten() - true_w).abs().max() < 0.1 and abs(b.item() - true_b) < 0.1
    assert w.grad.abs().sum() == 0  # sgd zeroes the gradients it used
    ordered = d2l.load_array((torch.arange(5),), 5, is_train=False)
    assert next(iter(ordered))[0].tolist() == [0, 1, 2, 3, 4]


def test_corr2d_and_residual_as_in_the_book():
    X = d2l.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])
    K = d2l.tensor([[0.0, 1.0], [2.0, 3.0]])
    assert d2l.corr2d(X, K).tolist() == [[19.0, 25.0], [37.0, 43.0]]
    X = torch.rand(4, 3, 6, 6)
    assert d2l.Residual(3, 3)(X).shape == (4, 3, 6, 6)
    assert d2l.Residual(3, 6, use_1x1conv=True, strides=2)(X).shape == (4, 6, 3, 3)


def test_mkdir_if_not_exist_takes_a_path_or_its_parts(tmp_path):
    d2l.mkdir_if_not_exist([str(tmp_path), "a", "b"])
    d2l.mkdir_if_not_exist(str(tmp_path / "a" / "b"))  # already there: nothing happens
    assert (tmp_path / "a" / "b").is_dir()


# ----------------------------------------------------------------------------- plain-function models
def scratch_softmax(seed=0, device="cpu"):
    """The book's softmax regression from scratch: a plain function and its own parameters."""
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(784, 10, generator=g) * 0.01).to(device).requires_grad_()
    b = torch.zeros(10, device=device, requires_grad=True)

    def net(X):
        return torch.softmax(d2l.matmul(d2l.reshape(X, (-1, W.shape[0])), W) + b, dim=1)

    return net, [W, b]


def cross_entropy(y_hat, y):
    return -d2l.log(y_hat[range(len(y_hat)), y])


def test_plain_function_models_train_evaluate_and_predict(tiny_root):
    train_iter, test_iter = d2l.load_data_fashion_mnist(20, root=tiny_root, num_workers=0, spec=TINY)
    net, params = scratch_softmax()
    before = d2l.evaluate_accuracy(net, test_iter)
    history = d2l.train_ch3(net, train_iter, test_iter, cross_entropy, 3,
                            lambda batch_size: d2l.sgd(params, 0.1, batch_size))
    assert history[-1]["test_acc"] > before and history[-1]["lr"] is None
    assert d2l.evaluate_loss(net, test_iter, cross_entropy) == pytest.approx(history[-1]["test_loss"])
    assert d2l.predict_ch3(net, test_iter) is None  # as my_utils: the figure, no stray return value
    d2l.plt.close("all")
    with pytest.raises(ValueError, match="nn.Module"):
        d2l.train_ch3(net, train_iter, test_iter, cross_entropy, 1, lambda n: None, trainer=object())


def test_an_updater_function_gets_my_utils_gradients_whatever_the_loss(tiny_root):
    """my_utils backpropagates ``l.sum()`` and lets the updater divide by the batch size: the updater
    sees the gradient of the batch's mean for a mean loss, of its sum for a per-example loss."""
    train_iter, _ = d2l.load_data_fashion_mnist(20, root=tiny_root, num_workers=0, spec=TINY)
    X, y = next(iter(train_iter))
    for loss, factor in ((nn.CrossEntropyLoss(), 1), (nn.CrossEntropyLoss(reduction="none"), 20)):
        net, (W, b) = scratch_softmax()
        grads = []

        def keep(batch_size):
            grads.append(W.grad.clone())
            W.grad.zero_()
            b.grad.zero_()

        d2l.train_epoch_ch3(net, [(X, y)], lambda y_hat, y: loss(torch.log(y_hat), y), keep)
        W.grad = None
        (nn.functional.nll_loss(torch.log(net(X)), y) * factor).backward()
        assert torch.allclose(grads[0], W.grad, atol=1e-6), loss


def test_train_ch6_trains_a_module_where_it_is_told(tiny_root, capsys):
    train_iter, test_iter = d2l.load_data_fashion_mnist(20, root=tiny_root, num_workers=0, spec=TINY)
    net = nn.Sequential(nn.Conv2d(1, 4, kernel_size=5, padding=2), nn.ReLU(), nn.AvgPool2d(4),
                        nn.Flatten(), nn.Linear(4 * 7 * 7, 10))
    history = d2l.train_ch6(net, train_iter, test_iter, 2, 0.5, device="cpu")
    out = capsys.readouterr().out
    assert out.startswith("training on cpu") and "examples/sec on cpu" in out
    assert f"test acc {history[-1]['test_acc']:.3f}" in out
    assert d2l.evaluate_accuracy_gpu(net, test_iter) == history[-1]["test_acc"]
    assert d2l.evaluate_accuracy_gpu(net, test_iter, "cpu") == history[-1]["test_acc"]


# ----------------------------------------------------------------------------- the data hub, offline
def test_download_uses_a_file_already_there_and_refuses_offline_saying_what_to_do(tmp_path,
                                                                                 monkeypatch):
    payload = b"Id,SalePrice\n1,208500\n"
    monkeypatch.setitem(book.DATA_HUB, "tiny", (book.DATA_URL + "tiny.csv",
                                               hashlib.sha1(payload).hexdigest()))

    def offline(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(OSError) as e:
        d2l.download("tiny", str(tmp_path))
    for what in (book.DATA_URL + "tiny.csv", str(tmp_path / "tiny.csv"), "without internet access",
                 hashlib.sha1(payload).hexdigest()):
        assert what in str(e.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    (tmp_path / "tiny.csv").write_bytes(payload)
    assert d2l.download("tiny", str(tmp_path)) == str(tmp_path / "tiny.csv")
    with pytest.raises(KeyError, match="not in DATA_HUB"):
        d2l.download("no-such-file", str(tmp_path))


def test_a_corrupt_download_is_refused_and_not_kept(tmp_path, monkeypatch):
    monkeypatch.setitem(book.DATA_HUB, "tiny", (book.DATA_URL + "tiny.csv", "0" * 40))

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return b"<html>an error page</html>"

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Response())
    with pytest.raises(OSError, match="SHA-1"):
        d2l.download("tiny", str(tmp_path))
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the loader's defaults
@pytest.mark.realdata
def test_the_loader_gives_what_my_utils_torchvision_loader_gives(real_root):
    """my_utils' ``load_data_fashion_mnist``: torchvision's FashionMNIST with ToTensor (+ Resize),
    the test split in order; nbutils reads the same files to the same floats."""
    for resize, shape in ((None, (1, 28, 28)), (64, (1, 64, 64))):
        trans = transforms.Compose(([transforms.Resize(resize)] if resize else []) +
                                   [transforms.ToTensor()])
        theirs = FashionMNIST(root=real_root, train=False, transform=trans)
        _, test_iter = d2l.load_data_fashion_mnist(32, resize=resize, num_workers=0)
        X, y = next(iter(test_iter))
        assert X.shape == (32, *shape) and X.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(X, torch.stack([theirs[i][0] for i in range(32)]))
        assert y.tolist() == [theirs[i][1] for i in range(32)]
    train_iter, test_iter = d2l.load_data_fashion_mnist(256)
    assert len(train_iter.dataset) == 60_000 and len(test_iter.dataset) == 10_000
    assert train_iter.num_workers == d2l.get_dataloader_workers()


@pytest.mark.cuda
def test_on_a_gpu_train_ch6_goes_there_by_default_and_the_aliases_follow(tiny_root, capsys):
    train_iter, test_iter = d2l.load_data_fashion_mnist(20, root=tiny_root, num_workers=0, spec=TINY)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    history = d2l.train_ch6(net, train_iter, test_iter, 1, 0.1)  # my_utils' default: try_gpu()
    assert capsys.readouterr().out.startswith("training on cuda:0")
    assert next(net.parameters()).is_cuda
    assert d2l.evaluate_accuracy_gpu(net, test_iter) == history[-1]["test_acc"]
    assert d2l.numpy(d2l.ones(2, device="cuda")).tolist() == [1.0, 1.0]
    plain, _ = scratch_softmax(device="cuda")
    assert 0 <= d2l.evaluate_accuracy(plain, test_iter, device="cuda") <= 1
