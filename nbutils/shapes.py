"""The report's shape table, traced from a live model rather than typed in (notebook 02)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_parameters", "format_shape_table", "trace_shapes"]


def count_parameters(net):
    return sum(p.numel() for p in net.parameters())


def trace_shapes(net, x=None):
    """Run one batch through ``net`` with forward hooks and return the report's table as rows.

    Each row is ``(layer, shape, output)``: Linear rows give (in, out) and the per-image output shape,
    BatchNorm rows give their feature count, activations and transposes have no shape. Reused modules
    (one ReLU per block) appear once per call, as in the report.
    """
    x = torch.zeros(2, 1, 28, 28) if x is None else x
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
        if prev is not None and is_transpose_of(inp, prev):
            rows.append((f"TRANSPOSE \u2192 {shape_text(inp.shape[1:])}", "", ""))
        name = names[module]
        if isinstance(module, nn.Linear):
            rows.append((linear_label(name), f"({module.in_features},{module.out_features})",
                         shape_text(out.shape[1:])))
        elif isinstance(module, nn.BatchNorm1d):
            rows.append((f"Batch Normalization ({module.num_features})", "", ""))
        else:
            rows.append(("ReLU Activation", "", ""))
        prev = out
    return rows


def is_transpose_of(inp, prev):
    # A square (256, 256) swap keeps the shape, so look at the memory: same storage, other strides.
    return inp.shape != prev.shape or (inp.data_ptr() == prev.data_ptr()
                                        and inp.stride() != prev.stride())


def linear_label(name):
    if name == "stemLinear":
        return "STEM"
    if name == "ClassifierLinear":
        return "Classifier Linear Layer"
    block, layer = name.split("_")  # Block1_Linear3 -> "Block 1 Layer 3"
    return f"Block {block[-1]} Layer {layer[-1]}"


def shape_text(shape):
    return "(" + ",".join(str(s) for s in shape) + ")"


def format_shape_table(rows):
    """The traced rows as aligned text (the report's Layer / Shape / Output table)."""
    rows = [("Layer", "Shape", "Output")] + [tuple(r) for r in rows]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows)
