"""What makes the patch MLP cheaper to train on a CPU, without changing what it computes.

On this project's 2-core AMD EPYC (Zen 3) a training step costs 0.6 to 0.7 s. Two thirds of it are
GEMMs, the rest mostly dropout, ReLU and memory traffic. Three changes, each measured there:

* :class:`Linear`: ``nn.Linear`` whose forward and input-gradient GEMMs run in oneDNN rather than MKL.
  MKL takes a slower code path on AMD processors, and there oneDNN's GEMMs are 1.2 to 1.6x faster on
  this model's shapes;
* :class:`Dropout`: ``nn.Dropout`` with a cheaper mask;
* :func:`tune_cpu_allocator` (the fast path calls it): glibc keeps freed activations in the heap.

:func:`to_torch_modules` puts torch's own modules back, for tools that match module types exactly.

The model uses the two modules in every loop, so the my_utils loop, ``train_ch3`` and the fast path
compute the same thing. On a GPU, and under torch.compile, torch.jit.trace or torch.func, the modules
are torch's own.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

import torch
from torch import nn

__all__ = ["Dropout", "Linear", "onednn_available", "to_torch_modules", "tune_cpu_allocator"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


def tune_cpu_allocator():
    """Stop glibc from returning big blocks to the OS after every step.

    Each step allocates and frees activations of up to 64 MB (128 x 256 x 512 floats). By default glibc
    serves those with mmap and unmaps them on free, so every step pays page faults on hundreds of MB:
    about a third of the step on a 2-core CPU. Keeping them in the heap removes that. Process-wide and
    harmless elsewhere (the process keeps its peak memory). Returns False where glibc is absent.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1)
        return bool(ok and libc.mallopt(_M_TOP_PAD, 256 << 20))
    except (OSError, AttributeError, TypeError):
        return False


@functools.cache
def onednn_available():
    """Whether this torch's oneDNN computes ``F.linear`` through the op :class:`Linear` uses.

    The op is a private one (inductor's), so it is tried once, at the first CPU forward, on a small
    input rather than trusted.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    # Fixed values: drawing random ones would move the global RNG under a seeded run.
    x, w, b = torch.arange(15.0).view(3, 5) / 7, torch.arange(10.0).view(2, 5) / 3 - 1, torch.ones(2)
    try:
        return torch.allclose(_gemm(x, w, b), torch.nn.functional.linear(x, w, b), atol=1e-5)
    except (AttributeError, RuntimeError, TypeError):
        return False


def _autocast_query():
    try:
        torch.is_autocast_enabled("cpu")
        return lambda: torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled


_cpu_autocast = _autocast_query()


_functorch_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def _transformed(*tensors):
    """Whether something other than eager autograd runs the model: torch.compile, torch.export,
    torch.jit.trace, or a torch.func transform (vmap, grad, jacrev). Then the modules are torch's:
    inductor cannot lower the oneDNN op on a weight that is not a graph constant (an InductorError),
    the tracer cannot record the op's arguments, and torch.func needs what the custom autograd
    Function does not define (setup_context, a batching rule)."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing()
            or any(_functorch_wrapped(t) for t in tensors if t is not None))


def _gemm(x, weight, bias=None):
    """``x @ weight.T + bias`` in oneDNN, on ordinary (dense, strided) tensors."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """``F.linear`` on 2-D input: forward and input gradient in oneDNN, weight gradient in MKL.

    MKL keeps the weight gradient: a reduction over all rows of the batch (32,768 at batch 128), where
    it is 2 to 4x faster than oneDNN here. The oneDNN op has no derivative of its own, so a backward
    that is itself differentiated (create_graph=True) and forward-mode AD use torch's matmul.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.save_for_forward(x, weight)
        return _gemm(x, weight, bias)

    @staticmethod
    def jvp(ctx, x_t, weight_t, bias_t):  # forward-mode AD (torch.autograd.forward_ad)
        x, weight = ctx.saved_tensors
        terms = [x_t @ weight.t() if x_t is not None else None,
                 x @ weight_t.t() if weight_t is not None else None, bias_t]
        return sum(t for t in terms if t is not None)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad = grad.contiguous()
        if not need_x:
            grad_x = None
        elif torch.is_grad_enabled():  # backward(create_graph=True): a second derivative will be
            grad_x = grad @ weight     # taken, and the oneDNN op has none
        else:
            grad_x = _gemm(grad, weight.t().contiguous())
        grad_weight = grad.t() @ x if need_weight else None
        grad_bias = grad.sum(0) if need_bias else None
        return grad_x, grad_weight, grad_bias


def _onednn_applies(x, weight):
    return (x.is_cpu and weight.is_cpu and x.dtype == weight.dtype == torch.float32
            and x.layout == weight.layout == torch.strided and not _transformed(x, weight)
            and x.numel() > 0 and not _cpu_autocast() and onednn_available())


class Linear(nn.Linear):
    """``nn.Linear`` whose fp32 CPU GEMMs run in oneDNN; the same module everywhere else.

    Why: on this project's AMD CPU, torch's fp32 ``F.linear`` calls MKL, which runs the model's forward
    GEMMs at 30 to 80 GFLOP/s where oneDNN reaches 40 to 115 (2 threads). Routing the forward and the
    input gradient through oneDNN takes the GEMMs of a training step from about 470 to 410 ms
    (torch.profiler, batch 128). The result is the same function up to fp32 rounding (about 1e-6; a
    seeded CPU run differs from one with a stock ``nn.Linear``, never from itself). CUDA, autocast,
    other dtypes, sparse input, torch.compile, torch.jit.trace, torch.func and torches without oneDNN
    take the stock path.
    """

    def forward(self, x):
        if not _onednn_applies(x, self.weight):
            return super().forward(x)
        y = _OneDNNLinear.apply(x.reshape(-1, self.in_features), self.weight, self.bias)
        return y.view(*x.shape[:-1], self.out_features)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on the CPU; the same module everywhere else.

    Why: on a CPU torch draws the mask with ``bernoulli_``, one float per element, then multiplies the
    input by it. That was a quarter of a training step of this model on 2 cores (145 of 570 ms; four
    dropout calls over 22 M activations). Here each element gets 16 random bits (four per 64-bit draw,
    the cheapest draw of torch's CPU generator) compared with (1 - p)·2¹⁶: an element is dropped with
    probability p to within 2⁻¹⁷ (GPU kernels often use 8-bit thresholds). The mask is then multiplied
    in, as torch does. Mask, forward and backward over (128, 256, 512) take about 80 ms against torch's
    170 to 230. The stream of masks differs from torch's, so a seeded CPU run differs from one with a
    stock ``nn.Dropout``, never from itself. CUDA (where a captured graph draws its masks with torch's
    own kernel), torch.compile, torch.jit.trace, torch.func, evaluation and p of 0 or 1 take the
    stock path.
    """

    def forward(self, x):
        if (not self.training or x.device.type != "cpu" or self.inplace or not 0 < self.p < 1
                or _transformed(x)):
            return super().forward(x)
        return x * _dropout_mask(x, self.p)  # autograd keeps only the mask for the backward


def _dropout_mask(x, p):
    """{0, 1/(1-p)} in ``x``'s shape and dtype, each element kept with probability (1 - p)."""
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, 2 ** 63 - 1)
    samples = bits.view(torch.int16)[:n].view(x.shape)
    keep = samples < round((1 - p) * 2 ** 16) - 2 ** 15
    return torch.where(keep, x.new_full((), 1 / (1 - p)), x.new_zeros(()))


def to_torch_modules(net, linear=True, dropout=True):
    """Put torch's ``nn.Linear`` and ``nn.Dropout`` in place of :class:`Linear` and :class:`Dropout`
    throughout ``net``, in place, and return it.

    Why: some tools match a module's exact type, not its class hierarchy, and skip or refuse these.
    ``torch.ao.quantization.quantize_dynamic(net, {nn.Linear})`` leaves every layer of the model in
    fp32 without a word. The new modules hold the very same Parameter objects (an optimizer built
    earlier still updates them) and the training flag; no random number is drawn. Hooks registered on
    the old modules do not move over. The benchmark's ``--stock-linear`` and ``--stock-dropout`` use
    this to measure what the two modules save.
    """
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if linear and type(child) is Linear:
                setattr(parent, name, _torch_linear(child))
            elif dropout and type(child) is Dropout:
                setattr(parent, name, nn.Dropout(child.p, child.inplace).train(child.training))
    return net


def _torch_linear(module):
    # Built on the meta device: no memory, and no draw from the global RNG for an init thrown away.
    stock = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                      device="meta")
    stock.weight, stock.bias = module.weight, module.bias
    return stock.train(module.training)
