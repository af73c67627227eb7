"""The fast training path: ``train_ch3``'s semantics, without its overheads (``train_ch3(fast=True)``).

Why the my_utils loop is slow: a DataLoader with per-sample transforms, a ``float()`` host sync per
batch, and on a GPU a model that is launch-bound at batch 128 (over a hundred small kernels per step).
What this path does instead:

* the data stay on the device (:class:`~nbutils.data.DeviceLoader`); the step gathers its batch by
  index, so an epoch costs one tiny index copy per batch and no host-to-device traffic;
* loss, accuracy and the NaN check accumulate on the device and are read once per epoch;
* on CUDA the whole step (gather, forward, loss, backward, the update of Adam, SGD or ASGD) is
  captured once as a CUDA graph and replayed; :func:`prepare_for_graphs` makes the optimizer's step
  capturable, with its learning rate in a device tensor, so that a scheduler's cut reaches the graph;
  evaluation is a second graph;
* mixed precision (``tf32``, ``bf16`` autocast) only when asked for;
* on a CPU, :func:`tune_cpu_allocator` keeps freed activations in the heap; it is process-wide, so
  the caller asks for it where its program starts (notebook 04 and the commands).

The last partial batch runs eagerly (a graph has static shapes); it is kept unless the loader drops it.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import time

import torch

from .data import DeviceLoader
from .devices import resolve_device
from .metrics import check_finite, per_example

__all__ = ["EVAL_BATCH_SIZE", "PRECISIONS", "FastTrainer", "bf16_emulated", "graph_safe", "keep_tensor",
           "prepare_for_graphs", "tune_cpu_allocator"]

PRECISIONS = ("fp32", "tf32", "bf16")
# The fast path evaluates in batches of at least this many images: 10 graph replays per test pass
# instead of 79 (results are the same; see load_data_fashion_mnist_device).
EVAL_BATCH_SIZE = 1000
# What makes each optimizer's step capturable. Adam fused: its update in one kernel instead of ~200
# tiny ones (reports/bench/README.md says what that saved). SGD has no capturable mode; fused, it is
# one kernel that reads the lr tensor.
CAPTURE = {torch.optim.Adam: dict(capturable=True, fused=True, foreach=False),
           torch.optim.AdamW: dict(capturable=True, fused=True, foreach=False),
           torch.optim.ASGD: dict(capturable=True),
           torch.optim.SGD: dict(fused=True, foreach=False)}


M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # glibc's mallopt parameters


def tune_cpu_allocator(device="cpu"):
    """On a CPU, stop glibc from returning big blocks to the OS after every step.

    Each step allocates and frees activations of up to 64 MB (128 x 256 x 512 floats). By default glibc
    serves those with mmap and unmaps them on free, so every step pays page faults on hundreds of MB.
    Keeping them in the heap removes that. Process-wide and harmless elsewhere (the process keeps its peak
    memory). Returns whether it was done: False for a GPU ``device`` and where glibc is absent.
    """
    if resolve_device(device).type != "cpu":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        ok = libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1)
        return bool(ok and libc.mallopt(M_TOP_PAD, 256 << 20))
    except (OSError, AttributeError, TypeError):
        return False


@functools.cache
def bf16_emulated():
    """Whether this CPU runs bf16 GEMMs far slower than fp32 ones (no AVX-512 BF16 or AMX): timed on a
    512x512 product, since torch has no stable query for it."""
    a = torch.ones(512, 512)
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x  # warm-up
        start = time.perf_counter()
        for _ in range(3):
            x @ x
        seconds[dtype] = time.perf_counter() - start
    return seconds[torch.bfloat16] > 3 * seconds[torch.float32]


def keep_tensor(group, key, tensor):
    """Copy ``group[key]``'s value into ``tensor`` and put ``tensor`` back in its place: a CUDA graph
    reads that tensor, not whatever the group holds now. Nothing to do where ``tensor`` is a float."""
    if torch.is_tensor(tensor) and group[key] is not tensor:
        tensor.copy_(torch.as_tensor(group[key]))
        group[key] = tensor


def prepare_for_graphs(optimizer, device):
    """Make a fresh Adam, AdamW, SGD or ASGD capturable in a CUDA graph, in place, and return whether
    its step now is (:func:`graph_safe`). Its learning rate becomes a device tensor: a float would be
    baked into the graph, and a scheduler's cut would never reach it.

    In place, so that a scheduler built on the optimizer keeps working on it. Only before the first
    step (state made without these settings would not fit them); other optimizers are left as
    they are, and the fast path runs their step eagerly.
    """
    settings = CAPTURE.get(type(optimizer))
    if (graph_safe(optimizer) or settings is None or optimizer.state
            or torch.device(device).type != "cuda"):
        return graph_safe(optimizer)  # already made for graphs (the recipe's), or left as it is
    # Built once with these settings, so that torch checks them (fused needs float CUDA parameters).
    groups = [dict(g, **settings, lr=torch.tensor(float(g["lr"]), device=device))
              for g in optimizer.param_groups]
    checked = type(optimizer)(groups)
    optimizer.param_groups, optimizer.defaults = checked.param_groups, checked.defaults
    for name in ("_step_supports_amp_scaling", "_need_device_dtype_check_for_fused"):
        if hasattr(checked, name):
            setattr(optimizer, name, getattr(checked, name))
    return graph_safe(optimizer)


def graph_safe(optimizer):
    """Whether ``optimizer.step()`` can be captured in a CUDA graph: it says so (``capturable``: Adam,
    AdamW, ASGD), or it is fused SGD with a tensor lr."""
    def safe(group):
        return group.get("capturable", False) or (
            isinstance(optimizer, torch.optim.SGD) and bool(group.get("fused"))
            and torch.is_tensor(group["lr"]))
    return all(safe(g) for g in optimizer.param_groups)


@contextlib.contextmanager
def matmul_precision(precision):
    """tf32: float32 matmuls on tensor cores. A flag read as each kernel starts, so the training step
    holds it through the backward pass too."""
    old = torch.get_float32_matmul_precision()
    if precision == "tf32":
        torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


@contextlib.contextmanager
def precision_context(precision, device):
    """The forward pass in ``precision``: bf16 autocast (whose backward follows its casts), or tf32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    with matmul_precision(precision):
        if precision == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        else:
            yield


class FastTrainer:
    """Train and evaluate ``net`` on :class:`DeviceLoader` data with static, capturable steps.

    ``graphs=None`` captures CUDA graphs when the device is CUDA and the optimizer's step can be made
    capturable (:func:`prepare_for_graphs`: Adam, AdamW, SGD and ASGD); other optimizers run the
    same step eagerly. Each step is made of the methods below, so a subclass (the tools' recipe and
    stacks) changes a step by overriding one of them: :meth:`inputs`, :meth:`forward`,
    :meth:`update`, :meth:`mutable_tensors`, :meth:`make_counters`.
    """

    def __init__(self, net, loss, optimizer, device, precision="fp32", graphs=None):
        self.net, self.loss, self.optimizer = net, loss, optimizer
        self.device = resolve_device(device)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        capturable = self.device.type == "cuda" and graphs is not False and \
            prepare_for_graphs(optimizer, self.device)
        self.graphs = (self.device.type == "cuda" and capturable) if graphs is None else graphs
        if self.graphs and not (self.device.type == "cuda" and capturable):
            raise ValueError("graphs=True needs CUDA and an optimizer whose step can be captured "
                             "(Adam, AdamW, SGD or ASGD, before its first step)")
        self.make_counters()
        self._graphs = {}
        self._stepped = False  # whether a training step has run (and made the optimizer's state)
        self._lr_tensors = [g["lr"] for g in optimizer.param_groups]

    def make_counters(self):
        """The epoch's loss sum, hit count and first bad batch, on the device."""
        on = dict(device=self.device)
        self.loss_sum = torch.zeros((), **on)
        self.correct = torch.zeros((), dtype=torch.long, **on)
        self.first_bad = torch.full((), -1, dtype=torch.long, **on)
        self.batch_no = torch.zeros((), dtype=torch.long, **on)

    # -- the step, written once: eager on the CPU and for partial batches, captured on CUDA. The
    # sums are over the last axis, so that counters of any shape keep theirs.
    def inputs(self, loader, idx, train):
        """The batch ``idx`` of ``loader``: ``(X, y)``."""
        return loader.batch(idx)

    def forward(self, loader, idx, net, train):
        X, y = self.inputs(loader, idx, train)
        with precision_context(self.precision, self.device):
            y_hat = net(X)
            l_sum = per_example(self.loss, y_hat, y).float().sum()  # whatever the loss's reduction
        return y_hat, y, l_sum

    def accumulate(self, y_hat, y, l_sum):
        self.loss_sum += l_sum.detach()
        self.correct += (y_hat.detach().argmax(dim=-1) == y).sum(-1)
        bad = (self.first_bad < 0) & ~torch.isfinite(l_sum.detach())
        self.first_bad.copy_(torch.where(bad, self.batch_no, self.first_bad))
        self.batch_no += 1

    def train_step(self, loader, idx):
        # set_to_none: backward then writes fresh gradients instead of adding into zeroed ones (20
        # kernels fewer); inside a graph they come from the graph's pool, at the same place each replay.
        self.optimizer.zero_grad(set_to_none=True)
        with matmul_precision(self.precision):
            y_hat, y, l_sum = self.forward(loader, idx, self.net, train=True)
            (l_sum / y.shape[-1]).sum().backward()  # each run's batch mean
        self.update()
        self.accumulate(y_hat, y, l_sum)

    def update(self):
        """What follows backward: the optimizer's step."""
        self.optimizer.step()

    def eval_step(self, loader, idx):
        with torch.no_grad():
            y_hat, y, l_sum = self.forward(loader, idx, self.evaluated, train=False)
            self.loss_sum += l_sum
            self.correct += (y_hat.argmax(dim=-1) == y).sum(-1)

    def keep_lr_tensors(self):
        """A scheduler (older torch) or a user may *replace* a tensor lr with a float; the graph still
        reads the tensor, so copy the new value into it rather than lose the cut."""
        for group, lr in zip(self.optimizer.param_groups, self._lr_tensors):
            keep_tensor(group, "lr", lr)

    def reset(self):
        self.loss_sum.zero_()
        self.correct.zero_()
        self.first_bad.fill_(-1)
        self.batch_no.zero_()

    # -- CUDA graphs
    def capture(self, step, loader):
        """Capture ``step`` on a static index buffer, without changing the model, optimizer or RNG.

        Warm-up iterations (needed before capture) really step the model, so everything they touch is
        saved first and restored in place afterwards, keeping the tensors the graph points at.
        """
        idx = loader.index_buffer()
        saved = [(t, t.clone()) for t in self.mutable_tensors()]
        opt_state = {id(p): {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
                     for p, s in self.optimizer.state.items()}
        rng = torch.cuda.get_rng_state(self.device)
        counters = [t.clone() for t in (self.loss_sum, self.correct, self.first_bad, self.batch_no)]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                step(loader, idx)
        torch.cuda.current_stream(self.device).wait_stream(side)
        with torch.no_grad():
            for t, value in saved:
                t.copy_(value)
            for p, s in self.optimizer.state.items():
                for k, v in s.items():
                    if torch.is_tensor(v):  # state the warm-up made (none after the eager first
                        # step, unless a parameter had no gradient then) starts from zero
                        v.copy_(opt_state[id(p)][k]) if id(p) in opt_state else v.zero_()
        torch.cuda.set_rng_state(rng, self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step(loader, idx)
        for t, saved in zip((self.loss_sum, self.correct, self.first_bad, self.batch_no), counters):
            t.copy_(saved)
        return graph, idx, loader  # the loader is kept so that its id is never reused

    def mutable_tensors(self):
        """What a training step may change in place, besides the optimizer's state."""
        return list(self.net.state_dict().values()) + \
            [lr for lr in self._lr_tensors if torch.is_tensor(lr)]

    @property
    def evaluated(self):
        """The model that evaluation runs: the trained one."""
        return self.net

    def run(self, loader, step, train):
        # A graph gathers from the images of the loader it was captured on: one graph per loader.
        key = (train, id(loader))
        for idx in loader.batch_indices():
            full = idx.shape[-1] == loader.batch_size
            if self.graphs and full and train and not self._stepped:
                # The first update runs eagerly: it creates the optimizer's state with its true
                # initial values (ASGD's eta is the lr, not 0), which capture's warm-up then restores.
                step(loader, idx)
                self._stepped = True
            elif self.graphs and full:
                if key not in self._graphs:
                    self._graphs[key] = self.capture(step, loader)
                graph, static_idx, _ = self._graphs[key]
                static_idx.copy_(idx)
                graph.replay()
            else:
                step(loader, idx)

    def train_pass(self, loader):
        """An epoch of training steps, its sums left in the counters."""
        self.net.train()
        self.keep_lr_tensors()
        self.reset()
        self.run(loader, self.train_step, train=True)

    def eval_pass(self, loader):
        """A pass of evaluation steps in eval mode, its sums left in the counters."""
        was_training = self.evaluated.training
        self.evaluated.eval()
        self.reset()
        self.run(loader, self.eval_step, train=False)
        self.evaluated.train(was_training)

    # -- the epoch functions that :func:`nbutils.train.train_ch3` calls
    def train_epoch(self, net, loader, loss, updater, device):
        require_device_loader(loader, "train_iter")
        self.train_pass(loader)
        check_finite(int(self.first_bad))
        n = len(loader.labels) if not loader.drop_last else len(loader) * loader.batch_size
        return float(self.loss_sum) / n, float(self.correct) / n

    def evaluate(self, net, loader, loss, device):
        require_device_loader(loader, "test_iter")
        self.eval_pass(loader)
        n = len(loader.labels)
        return float(self.loss_sum) / n, float(self.correct) / n


def require_device_loader(loader, name):
    if not isinstance(loader, DeviceLoader):
        raise ValueError(f"{name} must be a DeviceLoader (load_data_fashion_mnist_device) for the "
                         f"fast path, got {type(loader).__name__}")
