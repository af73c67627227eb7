"""The coursework's model (notebook 02) and initialisations (03), as exported: the report's listing,
shapes and parameter count; nbutils.shapes traces the table."""
import importlib
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
    assert sum(p.numel() for p in net.stemLinear.parameters()) == 16 * 256 + 256


def test_the_model_is_built_from_torchs_own_modules():
    types = {type(m) for m in nb.NeuralNetwork().modules()} - {nb.NeuralNetwork}
    assert types == {nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout}


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


def test_forward_takes_images_and_cuts_them_into_patches():
    net = nb.NeuralNetwork().eval()
    images = torch.randn(5, 1, 28, 28)
    assert net(images).shape == (5, 10)
    with torch.no_grad():
        stem = nb.patchify(images) @ net.stemLinear.weight.T + net.stemLinear.bias
    seen = []
    net.stemLinear.register_forward_hook(lambda m, i, o: seen.append(o))
    net(images)
    assert torch.allclose(seen[0], stem, atol=1e-5)


def test_forward_restores_training_mode_after_trace():
    net = nb.NeuralNetwork().train()
    nb.trace_shapes(net)
    assert net.training


def test_other_patch_size_builds_a_consistent_model():
    net = nb.NeuralNetwork(patch_size=7)
    assert net.stemLinear.in_features == 49 and net.batchnorm.num_features == 16
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


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


def test_make_optimizer_builds_the_named_optimizer_on_every_parameter():
    net = nb.NeuralNetwork()
    for name, cls in nb.OPTIMIZERS.items():
        opt = nb.make_optimizer(net, name, lr=0.01, weight_decay=0.1)
        assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.01
        assert opt.param_groups[0]["weight_decay"] == 0.1
        assert len(opt.param_groups[0]["params"]) == len(list(net.parameters()))
    with pytest.raises(ValueError, match=r"optimizer must be one of \['adam', 'asgd', 'sgd'\]"):
        nb.make_optimizer(net, "rmsprop")


def test_build_is_the_reports_model_loss_optimizer_and_scheduler_seeded():
    run, _ = nb.resolve("seed", seed=3, patience=7, init="xavier_normal")
    net, loss, opt, sched = nb.build(run)
    again = nb.build(run)[0]
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                 again.state_dict().values()))
    assert isinstance(loss, nn.CrossEntropyLoss) and isinstance(opt, torch.optim.Adam)
    assert isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (sched.patience, sched.mode, sched.threshold) == (7, "min", 1e-8)


def test_every_exported_name_resolves_to_its_modules_own():
    for module, names in nb.EXPORTS.items():
        for name in names:
            assert getattr(nb, name) is getattr(importlib.import_module(f"nbutils.{module}"), name), name
    assert sorted(nb.__all__) == sorted(n for names in nb.EXPORTS.values() for n in names)
    with pytest.raises(AttributeError):
        nb.no_such_helper
