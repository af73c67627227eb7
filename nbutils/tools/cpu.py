"""CPU kernels for the patch MLP: what oneDNN and a cheaper dropout mask buy on this project's CPU.

Not part of the training path: the model is written with torch's own modules, and trains with them.
The benchmark measures these kernels (``python3 -m nbutils bench --cpu-kernels``) through one
explicit call, :func:`cpu_kernels`, which turns the model's ``nn.Linear`` and ``nn.Dropout`` modules
into the two subclasses below for the length of a ``with`` block, then back: the same objects,
parameters and hooks, only their class changes. Both compute torch's function; the
rounding of the GEMMs and the stream of dropout masks differ, so a seeded run with them differs from
one without them, never from itself. Measured figures are in reports/bench/README.md.

* :class:`Linear`: the forward and input-gradient GEMMs in oneDNN rather than MKL, which takes a slower
  code path on AMD processors; the weight gradient, a reduction over the whole batch, stays in MKL;
* :class:`Dropout`: a mask from 16 random bits per element instead of ``bernoulli_``'s float;

Under torch.compile, torch.jit.trace and torch.func transforms (vmap: the stacked runs), with
autocast, other dtypes or devices, the two modules run torch's own code.
"""
from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

__all__ = ["Dropout", "Linear", "cpu_kernels", "onednn_available"]


def gemm(x, weight, bias=None):
    """``x @ weight.T + bias`` in oneDNN, on ordinary (dense, strided) 2-D tensors."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@functools.cache
def onednn_available():
    """Whether this torch computes ``F.linear`` through the oneDNN op :class:`Linear` uses: a private
    op (inductor's), so it is tried once on a small input rather than trusted (a torch built
    without oneDNN has no such op, and says so here)."""
    # Fixed values: drawing random ones would move the global RNG under a seeded run.
    x, w, b = torch.arange(15.0).view(3, 5) / 7, torch.arange(10.0).view(2, 5) / 3 - 1, torch.ones(2)
    try:
        return torch.allclose(gemm(x, w, b), torch.nn.functional.linear(x, w, b), atol=1e-5)
    except (AttributeError, RuntimeError, TypeError):
        return False


def cpu_autocast():
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled()


def transformed(*tensors):
    """Whether something other than eager autograd runs the model (torch.compile, torch.jit.trace,
    a torch.func transform), which the custom autograd function below does not support."""
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return (torch.compiler.is_compiling() or torch.jit.is_tracing()
            or any(wrapped(t) for t in tensors if t is not None))


class OneDNNLinear(torch.autograd.Function):
    """``F.linear`` on 2-D input: forward and input gradient in oneDNN, weight gradient in MKL."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return gemm(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad = grad.contiguous()
        # With create_graph=True a second derivative follows, and the oneDNN op has none.
        grad_x = None if not need_x else grad @ weight if torch.is_grad_enabled() else \
            gemm(grad, weight.t().contiguous())
        return grad_x, grad.t() @ x if need_weight else None, grad.sum(0) if need_bias else None


class Linear(nn.Linear):
    """``nn.Linear`` whose fp32 CPU GEMMs run in oneDNN (faster than MKL's on AMD processors, where
    MKL takes a slower code path: reports/bench/README.md); torch's own everywhere else."""

    def forward(self, x):
        if transformed(x, self.weight) or not (
                x.is_cpu and self.weight.is_cpu and x.dtype == self.weight.dtype == torch.float32
                and x.layout == torch.strided and x.numel() and not cpu_autocast()
                and onednn_available()):
            return super().forward(x)
        y = OneDNNLinear.apply(x.reshape(-1, self.in_features), self.weight, self.bias)
        return y.view(*x.shape[:-1], self.out_features)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on the CPU; torch's own everywhere else.

    torch draws one float per element with ``bernoulli_``. Here each element gets 16 random bits
    (four per 64-bit draw) compared with (1 - p)·2¹⁶, so it is dropped with probability p to within
    2⁻¹⁷, and the mask is multiplied in, as torch does.
    """

    def forward(self, x):
        if (not self.training or x.device.type != "cpu" or self.inplace or not 0 < self.p < 1
                or transformed(x)):
            return super().forward(x)
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, 2 ** 63 - 1)
        keep = bits.view(torch.int16)[:n].view(x.shape) < round((1 - self.p) * 2 ** 16) - 2 ** 15
        mask = torch.where(keep, x.new_full((), 1 / (1 - self.p)), x.new_zeros(()))
        return x * mask  # autograd keeps only the mask for the backward


KERNELS = {nn.Linear: Linear, nn.Dropout: Dropout}


@contextlib.contextmanager
def cpu_kernels(net):
    """Within the block, ``net``'s torch ``nn.Linear`` and ``nn.Dropout`` modules run the kernels
    above; afterwards they are torch's again. Subclasses of those modules are left alone."""
    switched = [(m, type(m)) for m in net.modules() if type(m) in KERNELS]
    for m, kind in switched:
        m.__class__ = KERNELS[kind]
    try:
        yield net
    finally:
        for m, kind in switched:
            m.__class__ = kind
