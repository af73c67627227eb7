"""nbutils.model: the report's listing, shapes, parameter count and weight initialisations."""
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import nbutils as nb

DATA = Path(__file__).parent / "data"



def test_listing_matches_report_line_for_line():
    expected = (DATA / "report_listing.txt").read_text().strip().splitlines()
    got = [re.sub(r"(BatchNorm1d\(.*), bias=True", r"\1", line) for line in
           str(nb.NeuralNetwork()).splitlines()]
    assert got == expected


def test_parameter_count():
    net = nb.NeuralNetwork()
    assert nb.count_parameters(net) == 230_844
    assert sum(n for _, n in nb.parameter_table(net)) == 230_844
    assert nb.parameter_table(net)[0] == ("stemLinear", 16 * 256 + 256)


def test_traced_shape_table_matches_report():
    def norm(cells):
        return tuple(re.sub(r"\s+", "", c) for c in cells)
    expected = [norm(line.split("\t")) for line in
                (DATA / "report_shape_table.txt").read_text().strip().splitlines()[1:]]
    expected = [tuple(c for c in row if c) for row in expected]
    got = [tuple(c for c in norm(row) if c) for row in nb.trace_shapes(nb.NeuralNetwork())]
    assert got == expected


def test_format_shape_table_has_header_and_every_row():
    rows = nb.trace_shapes(nb.NeuralNetwork())
    text = nb.format_shape_table(rows)
    assert text.splitlines()[0].split() == ["Layer", "Shape", "Output"]
    assert len(text.splitlines()) == len(rows) + 1


def test_forward_shapes_and_image_input():
    net = nb.NeuralNetwork().eval()
    images = torch.randn(5, 1, 28, 28)
    out = net(nb.patchify(images))
    assert out.shape == (5, 10)
    assert torch.equal(out, net(images))  # images are cut into patches by the model itself


def test_forward_restores_training_mode_after_trace():
    net = nb.NeuralNetwork().train()
    nb.trace_shapes(net)
    assert net.training


def test_other_patch_size_builds_a_consistent_model():
    net = nb.NeuralNetwork(patch_size=7)
    assert net.stemLinear.in_features == 49 and net.batchnorm.num_features == 16
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="patch_size"):
        nb.NeuralNetwork(patch_size=5)


def _fan_in(w):
    return w.shape[1]


@pytest.mark.parametrize("init, check", [
    ("kaiming_uniform", lambda w: w.abs().max() <= math.sqrt(6 / _fan_in(w)) + 1e-6),
    ("kaiming_normal", lambda w: abs(w.std() - math.sqrt(2 / _fan_in(w))) < 0.1 * math.sqrt(2 / _fan_in(w))),
    ("xavier_uniform", lambda w: w.abs().max() <= math.sqrt(6 / sum(w.shape)) + 1e-6),
    ("xavier_normal", lambda w: abs(w.std() - math.sqrt(2 / sum(w.shape))) < 0.1 * math.sqrt(2 / sum(w.shape))),
])
def test_inits_follow_their_distribution(init, check):
    torch.manual_seed(0)
    net = nb.init_weights(nb.NeuralNetwork(), init)
    w = net.Block1_Linear2.weight.detach()  # 256 x 512: enough samples for the std check
    assert check(w)


def test_inits_differ_and_leave_biases():
    torch.manual_seed(0)
    net = nb.NeuralNetwork()
    bias = net.stemLinear.bias.detach().clone()
    stds = {name: nb.init_weights(net, name).Block1_Linear2.weight.std().item() for name in nb.INITS}
    assert torch.equal(net.stemLinear.bias, bias)
    assert stds["kaiming_normal"] > 1.15 * stds["xavier_normal"]  # sqrt(2/512) vs sqrt(2/768)


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match=r"init must be one of \['kaiming_normal', 'kaiming_uniform'"):
        nb.init_weights(nn.Linear(2, 2), "he")


def test_every_exported_name_resolves():
    for name in nb.__all__:
        assert getattr(nb, name) is not None
    with pytest.raises(AttributeError):
        nb.no_such_helper
