"""nbutils.tools.cpu: the CPU kernels the bench measures compute what torch's modules compute, only on
a CPU, and only inside cpu_kernels()."""
import math
import platform

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nbutils as nb
from nbutils.fast import tune_cpu_allocator
from nbutils.tools import cpu
from nbutils.tools.cpu import Dropout, Linear

needs_onednn = pytest.mark.skipif(not cpu.onednn_available(), reason="torch without oneDNN")


@pytest.fixture
def gemm_calls(monkeypatch):
    """Counts the oneDNN GEMMs, to tell which calls Linear routes there."""
    calls = []
    real = cpu.gemm

    def counting(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(cpu, "gemm", counting)
    return calls


def forward_backward(module, x):
    x = x.detach().requires_grad_()
    module.zero_grad(set_to_none=True)
    y = module(x)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()  # an uneven upstream gradient
    return [y, x.grad] + [p.grad for p in module.parameters()]


def twins(bias=True):
    """A stock nn.Linear and an nbutils Linear with the same weights."""
    torch.manual_seed(0)
    ours = Linear(49, 64, bias=bias)
    stock = nn.Linear(49, 64, bias=bias)
    stock.load_state_dict(ours.state_dict())
    return stock, ours


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gives_torchs_output_and_gradients(bias, gemm_calls):
    stock, ours = twins(bias)
    inputs = (torch.randn(8, 64, 49),                  # 3-D, as in the model
              torch.randn(8, 49, 64).transpose(1, 2),  # 3-D, transposed (not contiguous)
              torch.randn(5, 49), torch.randn(49))
    for x in inputs:
        for e, g in zip(forward_backward(stock, x), forward_backward(ours, x)):
            assert g.shape == e.shape and torch.allclose(g, e, rtol=1e-5, atol=1e-5)
    assert len(gemm_calls) == 2 * len(inputs)  # the forward and the input gradient of each


@needs_onednn
def test_the_model_trains_the_same_through_onednn(gemm_calls):
    torch.manual_seed(0)
    stock = nb.init_weights(nb.NeuralNetwork())
    ours = nb.init_weights(nb.NeuralNetwork())
    ours.load_state_dict(stock.state_dict())
    nets = (stock, ours)
    X, y = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    losses = []
    for net in nets:
        net.Block1_Dropout.p = net.Block2_Dropout.p = 0.0  # no masks: only the GEMMs differ
        with cpu.cpu_kernels(net) if net is ours else torch.enable_grad():
            loss = F.cross_entropy(net(X), y)
            loss.backward()
        losses.append(loss)
    assert torch.allclose(losses[0], losses[1], rtol=1e-6)
    for p, q in zip(*(n.parameters() for n in nets)):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6)
    assert len(gemm_calls) == 10 + 9  # 10 Linear layers; the stem's input needs no gradient


@needs_onednn
def test_what_linear_leaves_to_torch(gemm_calls, monkeypatch):
    linear = Linear(4, 3)
    linear.double()(torch.randn(2, 4, dtype=torch.float64))  # not fp32
    linear.float()(torch.zeros(0, 4))                        # empty
    sparse = torch.sparse_coo_tensor([[0, 1], [0, 3]], [1.0, 2.0], (2, 4), check_invariants=True)
    assert torch.allclose(linear(sparse), F.linear(sparse.to_dense(), linear.weight, linear.bias))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(torch.randn(2, 4)).dtype == torch.bfloat16  # autocast decides
    with torch.no_grad():
        linear(torch.randn(2, 4))                            # evaluation is routed too
    assert len(gemm_calls) == 1
    monkeypatch.setattr(cpu, "onednn_available", lambda: False)  # a torch without oneDNN
    linear(torch.randn(2, 4))
    assert len(gemm_calls) == 1
    assert str(linear) == str(nn.Linear(4, 3)) and isinstance(linear, nn.Linear)


def test_onednn_probe_draws_no_random_numbers_and_refuses_a_broken_op(monkeypatch):
    torch.manual_seed(0)
    expected = torch.rand(3)
    probe = cpu.onednn_available.__wrapped__  # the probe itself, not its cached answer
    torch.manual_seed(0)
    probe()  # runs inside the first CPU forward: a seeded run must not see it
    assert torch.equal(torch.rand(3), expected)

    def broken(*args):
        raise RuntimeError("mkldnn::_linear_pointwise: no such signature")

    monkeypatch.setattr(cpu, "gemm", broken)
    assert probe() is False


@needs_onednn
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace is deprecated, still used
def test_compile_export_and_trace_take_torchs_modules_after_an_eager_forward():
    """A model that has run eagerly (oneDNN probed and cached) can still be compiled, exported and
    traced: the modules are torch's then. Before, inductor failed on the oneDNN op ("weight must be
    a graph constant") and the tracer could not record its arguments."""
    torch.manual_seed(0)
    net = nn.Sequential(Linear(16, 8), nn.ReLU(), Dropout(0.5), Linear(8, 4))
    x = torch.randn(8, 5, 16)
    net(x)
    compiled = torch.compile(net)
    compiled(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    expected = net(x)
    assert torch.allclose(compiled(x), expected, atol=1e-5)
    assert torch.allclose(torch.export.export(net, (x,)).module()(x), expected, atol=1e-5)
    assert torch.allclose(torch.jit.trace(net, x)(x), expected, atol=1e-5)


@needs_onednn
def test_second_derivatives_equal_torchs(gemm_calls):
    """A gradient penalty (backward through a gradient, create_graph=True) gives nn.Linear's result;
    the oneDNN op, which has no derivative of its own, stays out of the differentiated graph."""
    stock, ours = twins()
    x = torch.randn(6, 49, requires_grad=True)
    grads = []
    for module in (stock, ours):
        module.zero_grad(set_to_none=True)
        g, = torch.autograd.grad(torch.tanh(module(x)).square().sum(), x, create_graph=True)
        g.square().sum().backward()
        grads.append([p.grad for p in module.parameters()])
    for e, g in zip(*grads):
        assert torch.allclose(g, e, rtol=1e-5, atol=1e-5)
    # the forward, and the input gradient of the last, ordinary backward; the one under
    # create_graph=True took torch's differentiable matmul
    assert gemm_calls == [torch.Size([6, 49]), torch.Size([6, 64])]


@needs_onednn
def test_torch_func_transforms_take_torchs_modules(gemm_calls):
    """Per-example gradients with torch.func (vmap of grad) equal torch's own, one example at a time."""
    from torch.func import functional_call, grad, vmap
    stock, ours = twins()
    ours(torch.randn(2, 49))  # eager first: oneDNN probed and cached
    x = torch.randn(4, 49)

    def loss(module):
        return lambda params, xi: functional_call(module, params, (xi,)).square().sum()

    per_example = vmap(grad(loss(ours)), in_dims=(None, 0))(dict(ours.named_parameters()), x)
    for i in range(len(x)):  # was: "an autograd.Function ... must override setup_context"
        expected = grad(loss(stock))(dict(stock.named_parameters()), x[i])
        for name in expected:
            assert torch.allclose(per_example[name][i], expected[name], atol=1e-5)
    assert len(gemm_calls) == 1  # only the eager forward went to oneDNN


@pytest.mark.cuda
def test_linear_is_torchs_on_cuda(gemm_calls):
    stock, ours = twins()
    stock, ours = stock.cuda(), ours.cuda()
    x = torch.randn(8, 49, device="cuda")
    assert torch.equal(ours(x), stock(x)) and gemm_calls == []


def test_cpu_kernels_switch_torchs_modules_for_the_block_and_back():
    net = nb.init_weights(nb.NeuralNetwork()).eval()
    params, listing = list(net.parameters()), str(net)
    X = torch.randn(4, 1, 28, 28)
    expected = net(X)
    rng = torch.get_rng_state()
    with cpu.cpu_kernels(net):
        kinds = {type(m) for m in net.modules()}
        assert {Linear, Dropout} <= kinds and not {nn.Linear, nn.Dropout} & kinds
        assert torch.allclose(net(X), expected, atol=1e-5) and str(net) == listing
    assert torch.equal(torch.get_rng_state(), rng)  # nothing drawn
    assert {type(m) for m in net.modules()} == {nb.NeuralNetwork, nn.Linear, nn.BatchNorm1d,
                                                nn.ReLU, nn.Dropout}
    assert all(p is q for p, q in zip(net.parameters(), params))  # what an optimizer holds


def test_cpu_kernels_give_the_modules_back_after_an_error_and_leave_subclasses_alone():
    class Mine(nn.Linear):
        pass

    net = nn.Sequential(nn.Linear(3, 3), Mine(3, 3), nn.Dropout(0.1))
    with pytest.raises(RuntimeError, match="stop"):
        with cpu.cpu_kernels(net):
            assert [type(m) for m in net] == [Linear, Mine, Dropout]
            raise RuntimeError("stop")
    assert [type(m) for m in net] == [nn.Linear, Mine, nn.Dropout]


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_cpu_dropout_keeps_1_minus_p_and_scales_what_it_keeps(p):
    x = (torch.rand(400, 1000, dtype=torch.float64) + 1).requires_grad_()
    y = Dropout(p)(x)
    keep = y != 0
    n = keep.numel()
    assert abs(keep.sum().item() - (1 - p) * n) < 5 * math.sqrt(n * p * (1 - p))  # 5 sigma
    assert torch.allclose(y[keep], x[keep] / (1 - p))
    # No stripes: each of the four 16-bit quarters of a 64-bit draw keeps 1 - p of its elements.
    for quarter in range(4):
        assert abs(keep[:, quarter::4].double().mean() - (1 - p)) < 0.01
    y.backward(torch.full_like(y, 3.0))
    assert torch.allclose(x.grad, keep.double() * 3.0 / (1 - p))


def test_cpu_dropout_is_seeded_and_a_stock_dropout_elsewhere():
    x = torch.ones(64, 256)
    masks = []
    for _ in range(2):
        torch.manual_seed(0)
        masks.append(Dropout(0.1)(x) != 0)
    assert torch.equal(*masks) and not masks[0].all()
    assert Dropout(0.1)(x.bfloat16()).dtype == torch.bfloat16  # the mask takes the input's dtype
    assert torch.equal(Dropout(0.1).eval()(x), x)
    assert torch.equal(Dropout(0.0)(x), x)
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))
    assert str(Dropout(0.2)) == str(nn.Dropout(0.2)) == "Dropout(p=0.2, inplace=False)"
    assert isinstance(Dropout(0.2), nn.Dropout)  # code that switches dropouts off still finds it


def test_cpu_allocator_tuning_is_accepted_by_glibc():
    assert tune_cpu_allocator() is (platform.libc_ver()[0] == "glibc")  # False where glibc is absent
