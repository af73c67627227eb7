"""d2l's own names, as the course's my_utils (d2l/torch.py at d2l-en commit 78c39a6c) defines them.

``import nbutils as d2l`` runs the book's code: the torch aliases that d2lbook generated from the
book's ``config.ini`` (one line each, as in that file), the linear-regression helpers of chapter 3,
``corr2d``, chapter 6's ``evaluate_accuracy_gpu`` and ``train_ch6``, the ResNet ``Residual`` block and
the data hub. The rest of my_utils (plotting, Fashion-MNIST, the chapter-3 loop, ``try_gpu``) lives
in the modules it belongs to. Where this differs from the 2020 file, the docstring says so.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.request
import zipfile

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils import data

from .devices import resolve_device
from .io import atomic_write_bytes
from .train import evaluate_accuracy, train_ch3

__all__ = ["DATA_HUB", "DATA_URL", "Residual", "abs", "arange", "argmax", "astype", "concat", "corr2d",
           "cos", "cosh", "download", "download_all", "download_extract", "evaluate_accuracy_gpu",
           "exp", "float32", "int32", "linreg", "linspace", "load_array", "log", "matmul", "meshgrid",
           "mkdir_if_not_exist", "normal", "numpy", "ones", "reduce_sum", "reshape", "sgd", "sin",
           "sinh", "size", "squared_loss", "stack", "synthetic_data", "tanh", "tensor", "to",
           "train_ch6", "transpose", "zeros"]

# ------------------------------------------------------------------------- d2l's aliases (config.ini)
ones = torch.ones
zeros = torch.zeros
tensor = torch.tensor
arange = torch.arange
meshgrid = torch.meshgrid
sin = torch.sin
sinh = torch.sinh
cos = torch.cos
cosh = torch.cosh
tanh = torch.tanh
linspace = torch.linspace
exp = torch.exp
log = torch.log
normal = torch.normal
matmul = torch.matmul
int32 = torch.int32
float32 = torch.float32
concat = torch.cat
stack = torch.stack
abs = torch.abs
numpy = lambda x, *args, **kwargs: x.detach().cpu().numpy(*args, **kwargs)  # .cpu(): a GPU tensor too
size = lambda x, *args, **kwargs: x.numel(*args, **kwargs)
reshape = lambda x, *args, **kwargs: x.reshape(*args, **kwargs)
to = lambda x, *args, **kwargs: x.to(*args, **kwargs)
reduce_sum = lambda x, *args, **kwargs: x.sum(*args, **kwargs)
argmax = lambda x, *args, **kwargs: x.argmax(*args, **kwargs)
astype = lambda x, *args, **kwargs: x.type(*args, **kwargs)
transpose = lambda x, *args, **kwargs: x.t(*args, **kwargs)


# ----------------------------------------------------------------------------- chapter 2 and 3
def mkdir_if_not_exist(path):
    """Make a directory if it does not exist; ``path`` is a string or a list of its parts."""
    if not isinstance(path, str):
        path = os.path.join(*path)
    os.makedirs(path, exist_ok=True)


def synthetic_data(w, b, num_examples):
    """Generate y = Xw + b + noise."""
    X = torch.normal(0, 1, (num_examples, len(w)))
    y = torch.matmul(X, w) + b
    y += torch.normal(0, 0.01, y.shape)
    return X, y.reshape((-1, 1))


def linreg(X, w, b):
    """The linear regression model."""
    return torch.matmul(X, w) + b


def squared_loss(y_hat, y):
    """Squared loss, per example (halved, as in the book)."""
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def sgd(params, lr, batch_size):
    """Minibatch stochastic gradient descent on gradients summed over the batch."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


def load_array(data_arrays, batch_size, is_train=True):
    """A PyTorch data iterator over tensors of the same length, shuffled for training."""
    return data.DataLoader(data.TensorDataset(*data_arrays), batch_size, shuffle=is_train)


# ----------------------------------------------------------------------------- chapters 6 and 7
def corr2d(X, K):
    """2-D cross-correlation of ``X`` with the kernel ``K``."""
    h, w = K.shape
    Y = torch.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i: i + h, j: j + w] * K).sum()
    return Y


def evaluate_accuracy_gpu(net, data_iter, device=None):
    """Chapter 6's name for :func:`~nbutils.train.evaluate_accuracy`, which already runs on the
    model's device (or ``device``), in eval mode, without gradients."""
    return evaluate_accuracy(net, data_iter, device)


def train_ch6(net, train_iter, test_iter, num_epochs, lr, device=None):
    """Train a model with CPU or GPU (d2l, chapter 6): Xavier-uniform init of the Linear and Conv2d
    weights, SGD at ``lr``, cross-entropy. ``device=None`` is d2l's default, :func:`try_gpu`.

    Unlike the 2020 file it trains through :func:`train_ch3` (one plot point per epoch, not every 50
    batches; no host sync per batch), counts examples/sec over whole epochs, evaluation included,
    and returns the History.
    """
    def init_weights(m):
        if type(m) in (nn.Linear, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)

    net.apply(init_weights)
    device = resolve_device(device)
    print("training on", device)
    history = train_ch3(net, train_iter, test_iter, nn.CrossEntropyLoss(), num_epochs,
                        torch.optim.SGD(net.parameters(), lr=lr), device=device)
    last = history[-1]
    print(f"loss {last['train_loss']:.3f}, train acc {last['train_acc']:.3f}, "
          f"test acc {last['test_acc']:.3f}")
    seconds = sum(history.column("seconds"))
    print(f"{len(train_iter.dataset) * num_epochs / seconds:.1f} examples/sec on {device}")
    return history


class Residual(nn.Module):
    """The residual block of ResNet (chapter 7): two 3x3 convolutions with BatchNorm, and a 1x1
    convolution on the shortcut when ``use_1x1conv`` (to change the channels or the stride)."""

    def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1,
                               stride=strides)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(input_channels, num_channels, kernel_size=1,
                               stride=strides) if use_1x1conv else None
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        Y += X
        return F.relu(Y)


# ----------------------------------------------------------------------------- the data hub (chapter 4)
DATA_HUB = dict()  # name -> (url, sha1 of the file)
DATA_URL = "http://d2l-data.s3-accelerate.amazonaws.com/"
DATA_HUB["kaggle_house_train"] = (DATA_URL + "kaggle_house_pred_train.csv",
                                  "585e9cc93e70b39160e7921475f9bcd7d31219ce")
DATA_HUB["kaggle_house_test"] = (DATA_URL + "kaggle_house_pred_test.csv",
                                 "fa19780a7b011d9b009e8bff8e99922a8ee2eb90")


def sha1_of(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def download(name, cache_dir=os.path.join("..", "data")):
    """Download a file of ``DATA_HUB`` into ``cache_dir`` unless it is there already; its path.

    Beyond the 2020 file: a download whose SHA-1 differs is refused (and not kept), and without
    internet access the error names the URL and where to put the file by hand.
    """
    if name not in DATA_HUB:
        raise KeyError(f"{name!r} is not in DATA_HUB (it holds {sorted(DATA_HUB)})")
    url, sha1_hash = DATA_HUB[name]
    mkdir_if_not_exist(cache_dir)
    fname = os.path.join(cache_dir, url.split("/")[-1])
    if os.path.exists(fname) and sha1_of(fname) == sha1_hash:
        return fname  # hit cache
    print(f"Downloading {fname} from {url}...")
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            payload = r.read()
    except OSError as e:  # URLError, timeouts, refused connections
        raise OSError(f"could not download {url} ({e}); without internet access, fetch it elsewhere "
                      f"and put it at {fname} (SHA-1 {sha1_hash})") from e
    if hashlib.sha1(payload).hexdigest() != sha1_hash:
        raise OSError(f"{url}: the download's SHA-1 is not {sha1_hash}; try again later")
    atomic_write_bytes(fname, payload)
    return fname


def download_extract(name, folder=None):
    """Download and extract a zip or tar file; the folder it was extracted to."""
    fname = download(name)
    base_dir = os.path.dirname(fname)
    data_dir, ext = os.path.splitext(fname)
    if ext == ".zip":
        fp = zipfile.ZipFile(fname, "r")
    elif ext in (".tar", ".gz"):
        fp = tarfile.open(fname, "r")
    else:
        raise ValueError(f"{fname}: only zip/tar files can be extracted")
    with fp:
        fp.extractall(base_dir)
    return os.path.join(base_dir, folder) if folder else data_dir


def download_all():
    """Download all files in the DATA_HUB."""
    for name in DATA_HUB:
        download(name)
