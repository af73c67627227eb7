"""The coursework's patch MLP, its weight initialisations, and a shape trace of the live model."""
from __future__ import annotations

import torch
from torch import nn

from .cpu import Dropout, Linear
from .data import IMAGE_SIZE, _check_patch_size, patchify

__all__ = ["INITS", "NeuralNetwork", "compare_inits", "count_parameters", "init_weights",
           "trace_shapes", "format_shape_table", "parameter_table"]


class NeuralNetwork(nn.Module):
    """Patch MLP of the report: a linear stem, two token/channel-mixing blocks, a mean-pooled classifier.

    Input: patches (B, 49, 16), or images (B, 1, 28, 28) which are cut into patches first so that the
    my_utils loops, which feed images, work unchanged. Output: (B, 10) logits.
    Module names and order reproduce the report's printed listing; one ReLU and one Dropout module per
    block are reused, as there. Its Linear and Dropout are torch's, made cheaper on a CPU
    (:mod:`nbutils.cpu`); they print and behave as torch's.
    """

    def __init__(self, patch_size=4, num_classes=10):
        super().__init__()
        _check_patch_size(patch_size)
        self.patch_size = patch_size
        n_patches, patch_dim = (IMAGE_SIZE // patch_size) ** 2, patch_size ** 2
        self.stemLinear = Linear(patch_dim, 256)
        self.batchnorm = nn.BatchNorm1d(n_patches)
        self.Block1_Linear1 = Linear(n_patches, 512)
        self.Block1_Linear2 = Linear(512, 256)
        self.Block1_Linear3 = Linear(256, 128)
        self.Block1_Linear4 = Linear(128, 64)
        self.batchnorm1 = nn.BatchNorm1d(256)
        self.Block1_ReLU = nn.ReLU()
        self.Block1_Dropout = Dropout(0.1)
        self.Block2_Linear1 = Linear(256, 64)
        self.Block2_Linear2 = Linear(64, 128)
        self.Block2_Linear3 = Linear(64, 32)
        self.Block2_Linear4 = Linear(32, 16)
        self.batchnorm2 = nn.BatchNorm1d(128)
        self.Block2_ReLU = nn.ReLU()
        self.Block2_Dropout = Dropout(0.2)
        self.ClassifierLinear = Linear(16, num_classes)

    def forward(self, x):
        if x.dim() == 4:
            x = patchify(x, self.patch_size)
        x = self.batchnorm(self.stemLinear(x))                   # (B, 49, 256)
        x = x.transpose(1, 2)                                    # (B, 256, 49)   mix tokens
        x = self.Block1_Dropout(self.Block1_ReLU(self.Block1_Linear1(x)))
        x = self.Block1_Linear2(x).transpose(1, 2)               # (B, 256, 256)  mix channels
        x = self.Block1_Dropout(self.Block1_ReLU(self.Block1_Linear3(x)))
        x = self.batchnorm1(self.Block1_Linear4(x))              # (B, 256, 64)
        x = x.transpose(1, 2)                                    # (B, 64, 256)   mix tokens
        x = self.Block2_Dropout(self.Block2_ReLU(self.Block2_Linear1(x)))
        x = self.Block2_Linear2(x).transpose(1, 2)               # (B, 128, 64)   mix channels
        x = self.Block2_Dropout(self.Block2_ReLU(self.Block2_Linear3(x)))
        x = self.batchnorm2(self.Block2_Linear4(x))              # (B, 128, 16)
        return self.ClassifierLinear(x).mean(dim=1)              # (B, 128, 10) -> (B, 10)


INITS = {
    "kaiming_uniform": nn.init.kaiming_uniform_,
    "kaiming_normal": nn.init.kaiming_normal_,
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
}


def init_weights(net, init="kaiming_uniform"):
    """Re-initialise every Linear weight with the named scheme (biases keep torch's default, as in the
    coursework's ``apply(init_weights)``). Returns ``net``."""
    if init not in INITS:
        raise ValueError(f"init must be one of {sorted(INITS)}, got {init!r}")
    fn = INITS[init]
    for m in net.modules():
        if isinstance(m, nn.Linear):
            fn(m.weight)
    return net


def compare_inits(X, inits=tuple(INITS), layer="Block1_Linear2", patch_size=4, seed=0):
    """For each init: one layer's weights and the std of every Linear's output on batch ``X``.

    Shows what the report's init comparison was about: how each scheme scales the signal through
    the depth of the network before any training.
    """
    stats = {}
    for name in inits:
        torch.manual_seed(seed)
        net = init_weights(NeuralNetwork(patch_size), name).eval()
        stds = {}
        hooks = [m.register_forward_hook(lambda m, i, o, n=n: stds.__setitem__(n, float(o.std())))
                 for n, m in net.named_modules() if isinstance(m, nn.Linear)]
        with torch.no_grad():
            net(X)
        for h in hooks:
            h.remove()
        stats[name] = {"layer": layer, "weights": getattr(net, layer).weight.detach().clone(),
                       "activation_std": stds}
    return stats


def count_parameters(net):
    return sum(p.numel() for p in net.parameters())


def parameter_table(net):
    """Rows (module name, parameter count) of every module that owns parameters, in listing order."""
    return [(name, sum(p.numel() for p in m.parameters(recurse=False)))
            for name, m in net.named_modules() if any(True for _ in m.parameters(recurse=False))]


def trace_shapes(net, x=None):
    """Run one batch through ``net`` with forward hooks and return the report's table as rows.

    Each row is ``(layer, shape, output)``: Linear rows give (in, out) and the per-image output shape,
    BatchNorm rows give their feature count, activations and transposes have no shape. Reused modules
    (one ReLU per block) appear once per call, as in the report.
    """
    x = torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE) if x is None else x
    calls = []

    def hook(module, inputs, output):
        calls.append((module, inputs[0], output))

    hooks = [m.register_forward_hook(hook) for m in net.modules()
             if isinstance(m, (nn.Linear, nn.BatchNorm1d, nn.ReLU))]
    was_training = net.training
    try:
        net.eval()  # dropout becomes the identity, so a layer's input *is* the previous output
        with torch.no_grad():
            net(x.to(next(net.parameters()).device))
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()

    rows, prev = [], None
    names = {m: n for n, m in net.named_modules()}
    for module, inp, out in calls:
        if prev is not None and _is_transpose_of(inp, prev):
            rows.append((f"TRANSPOSE \u2192 {_shape(inp.shape[1:])}", "", ""))
        name = names[module]
        if isinstance(module, nn.Linear):
            rows.append((_linear_label(name), f"({module.in_features},{module.out_features})",
                         _shape(out.shape[1:])))
        elif isinstance(module, nn.BatchNorm1d):
            rows.append((f"Batch Normalization ({module.num_features})", "", ""))
        else:
            rows.append(("ReLU Activation", "", ""))
        prev = out
    return rows


def _is_transpose_of(inp, prev):
    # A square (256, 256) swap keeps the shape, so look at the memory: same storage, other strides.
    return inp.shape != prev.shape or (inp.data_ptr() == prev.data_ptr()
                                        and inp.stride() != prev.stride())


def _linear_label(name):
    if name == "stemLinear":
        return "STEM"
    if name == "ClassifierLinear":
        return "Classifier Linear Layer"
    block, layer = name.split("_")  # Block1_Linear3 -> "Block 1 Layer 3"
    return f"Block {block[-1]} Layer {layer[-1]}"


def _shape(shape):
    return "(" + ",".join(str(s) for s in shape) + ")"


def format_shape_table(rows):
    """The traced rows as aligned text (the report's Layer / Shape / Output table)."""
    rows = [("Layer", "Shape", "Output")] + [tuple(r) for r in rows]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows)
