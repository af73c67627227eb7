"""Where a graphed training step's device time goes, and what rewrites of the coursework model's
forward would save (issue 4). Not part of the package: a measurement, kept so that its numbers in
reports/gpu-check/ can be made again.

    python3 .ci/gpu-probe.py OUT_JSON [--compile]   # from the repository root; .ci/gpu-check runs it
                                                    # with PROBE=1 (PROBE=compile adds --compile)

Every rewrite computes the baseline's function (checked first: outputs and, with dropout off,
gradients). Then each one's training step (fused Adam, CUDA graph, batch 128) is timed over 300
replays in fp32, tf32 and bf16 autocast, and the baseline's graphed step is profiled kernel by kernel.
With --compile, the baseline under torch.compile, captured the same way, in fp32 and bf16: step time
and compile time, cold and with inductor's cache warm (the issue's "compile where it measurably wins").
Batches are synthetic: the time of a step does not depend on the pixel values.
"""
import json
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, ".")
from nbutils.coursework import NeuralNetwork, make_optimizer, patchify  # noqa: E402 - after the path is set
from nbutils.fast import prepare_for_graphs  # noqa: E402


def left(lin, x, how):  # lin applied along dim 1 of x (B, in, C) -> (B, out, C), no transpose copy
    if how == "matmul":
        return torch.matmul(lin.weight, x) + lin.bias[:, None]
    W = lin.weight.expand(x.shape[0], -1, -1)
    return torch.baddbmm(lin.bias[:, None].expand(x.shape[0], -1, x.shape[2]), W, x)


class NoTranspose(NeuralNetwork):
    how = "matmul"

    def forward(self, x):
        h = self.how
        x = self.batchnorm(self.stemLinear(patchify(x)))                         # (B,49,256)
        x = self.Block1_Dropout(F.relu(left(self.Block1_Linear1, x, h)))         # (B,512,256)
        x = left(self.Block1_Linear2, x, h)                                      # (B,256',256)
        x = self.Block1_Dropout(F.relu(self.Block1_Linear3(x)))
        x = self.batchnorm1(self.Block1_Linear4(x))                              # (B,256',64)
        x = self.Block2_Dropout(F.relu(left(self.Block2_Linear1, x, h)))         # (B,64,64)
        x = left(self.Block2_Linear2, x, h)                                      # (B,128,64)
        x = self.Block2_Dropout(F.relu(self.Block2_Linear3(x)))
        x = self.batchnorm2(self.Block2_Linear4(x))
        return self.ClassifierLinear(x).mean(dim=1)


class NoTransposeBmm(NoTranspose):
    how = "bmm"


class _LinearReLU(torch.autograd.Function):
    """relu(x @ W.T + b) with bias and ReLU in the GEMM's epilogue (cublasLt); backward from y."""

    @staticmethod
    def forward(ctx, x, W, b):
        if torch.is_autocast_enabled("cuda"):
            dt = torch.get_autocast_dtype("cuda")
            x, W, b = x.to(dt), W.to(dt), b.to(dt)
        with torch.autocast("cuda", enabled=False):
            y = torch._addmm_activation(b, x, W.t())
        ctx.save_for_backward(x, W, y)
        ctx.dtypes = (W.dtype,)
        return y

    @staticmethod
    def backward(ctx, g):
        x, W, y = ctx.saved_tensors
        g = torch.ops.aten.threshold_backward(g.to(y.dtype), y, 0)
        return g @ W, (g.t() @ x).float(), g.sum(0).float()


def linear_relu(lin, x):
    shape = x.shape
    y = _LinearReLU.apply(x.reshape(-1, shape[-1]), lin.weight, lin.bias)
    return y.view(*shape[:-1], -1)


class ReluEpilogue(NeuralNetwork):
    def forward(self, x):
        x = self.batchnorm(self.stemLinear(patchify(x))).transpose(1, 2)
        x = self.Block1_Dropout(linear_relu(self.Block1_Linear1, x.contiguous()))
        x = self.Block1_Linear2(x).transpose(1, 2)
        x = self.Block1_Dropout(linear_relu(self.Block1_Linear3, x.contiguous()))
        x = self.batchnorm1(self.Block1_Linear4(x)).transpose(1, 2)
        x = self.Block2_Dropout(linear_relu(self.Block2_Linear1, x.contiguous()))
        x = self.Block2_Linear2(x).transpose(1, 2)
        x = self.Block2_Dropout(linear_relu(self.Block2_Linear3, x.contiguous()))
        x = self.batchnorm2(self.Block2_Linear4(x))
        return self.ClassifierLinear(x).mean(dim=1)


class Combined(NoTransposeBmm):
    def forward(self, x):
        h = self.how
        x = self.batchnorm(self.stemLinear(patchify(x)))
        x = self.Block1_Dropout(F.relu(left(self.Block1_Linear1, x, h)))
        x = left(self.Block1_Linear2, x, h)
        x = self.Block1_Dropout(linear_relu(self.Block1_Linear3, x))
        x = self.batchnorm1(self.Block1_Linear4(x))
        x = self.Block2_Dropout(F.relu(left(self.Block2_Linear1, x, h)))
        x = left(self.Block2_Linear2, x, h)
        x = self.Block2_Dropout(linear_relu(self.Block2_Linear3, x))
        x = self.batchnorm2(self.Block2_Linear4(x))
        return self.ClassifierLinear(x).mean(dim=1)


VARIANTS = {"baseline": NeuralNetwork, "no-transpose-matmul": NoTranspose,
            "no-transpose-bmm": NoTransposeBmm, "relu-epilogue": ReluEpilogue,
            "combined": Combined}


def check_equal(device):
    """Same weights, eval mode: every variant computes the baseline's function."""
    torch.manual_seed(0)
    X = torch.randn(8, 1, 28, 28, device=device)
    ref = NeuralNetwork().to(device).eval()
    out = {}
    for name, cls in VARIANTS.items():
        net = cls().to(device).eval()
        net.load_state_dict(ref.state_dict())
        with torch.no_grad():
            out[name] = float((net(X) - ref(X)).abs().max())
        net.train()  # dropout off: the rewrites draw their masks in another layout
        for m in (net, ref):
            m.Block1_Dropout.p = m.Block2_Dropout.p = 0.0
        torch.manual_seed(1); net(X).square().sum().backward()
        ref.train(); ref.zero_grad()
        torch.manual_seed(1); ref(X).square().sum().backward()
        ref.eval()
        for m in (net, ref):
            m.Block1_Dropout.p, m.Block2_Dropout.p = 0.1, 0.2
        out[name + " grad"] = max(float((p.grad - q.grad).abs().max() / (q.grad.abs().max() + 1e-12))
                                  for p, q in zip(net.parameters(), ref.parameters()))
    return out


def make_step(cls, precision, device, B=128, wrap=None, timings=None):
    """The graphed training step of ``cls`` (on a CPU, the eager step). ``wrap`` wraps the model
    (torch.compile); ``timings["warmup_s"]`` gets the warm-up's wall time, where a compile happens."""
    torch.manual_seed(0)
    net = cls().to(device).train()
    model = wrap(net) if wrap else net
    opt = make_optimizer(net)
    prepare_for_graphs(opt, device)
    X = torch.randn(B, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (B,), device=device)
    ce = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            l = ce(model(X), y)
        l.backward()
        opt.step()
    start = time.perf_counter()
    if device.type != "cuda":
        if timings is not None:  # only to time a compile: time_step warms up on its own
            for _ in range(3):
                step()
            timings["warmup_s"] = time.perf_counter() - start
        return step
    if precision == "tf32":
        torch.set_float32_matmul_precision("high")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    if timings is not None:
        timings["warmup_s"] = time.perf_counter() - start
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    torch.set_float32_matmul_precision("highest")
    return g.replay


def compile_probe(device, precisions, n):
    """The baseline step with the model under torch.compile (inductor fuses the elementwise work
    around the GEMMs), captured as the same CUDA graph: step time, and the compile's cost cold and
    again after torch._dynamo.reset() (inductor's on-disk cache warm), both of which a 30-epoch run
    would pay."""
    out = {}
    for prec in precisions:
        for attempt in ("cold", "warm"):
            torch._dynamo.reset()
            timings = {}
            try:
                fn = make_step(NeuralNetwork, prec, device, wrap=torch.compile, timings=timings)
                row = dict(compile_s=timings["warmup_s"], ms_per_step=time_step(fn, device, n))
            except Exception as e:  # noqa
                row = dict(failed=f"{type(e).__name__}: {e}"[:300])
            out[f"compiled-{prec}-{attempt}"] = row
            print(f"compiled {prec} ({attempt} cache): {row}", flush=True)
    return out


def time_step(fn, device, n):
    for _ in range(10):
        fn()
    torch.cuda.synchronize() if device.type == "cuda" else None
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize() if device.type == "cuda" else None
    return 1000 * (time.perf_counter() - t) / n


def kernel_profile(fn, n=20, rows=30):
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    agg = {}
    for e in kernels:
        a = agg.setdefault(e.name, [0, 0.0])
        a[0] += 1
        a[1] += e.device_time
    total = sum(v[1] for v in agg.values()) / n
    top = sorted(agg.items(), key=lambda kv: -kv[1][1])[:rows]
    return dict(kernels_per_step=sum(v[0] for v in agg.values()) / n, kernel_us_per_step=total,
                top=[dict(name=k[:110], per_step=v[0] / n, us_per_step=v[1] / n) for k, v in top])


def main(out, compiled=False):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = dict(device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                  torch=torch.__version__, max_abs_diff=check_equal(device), ms_per_step={},
                  profile={})
    print(json.dumps(result["max_abs_diff"]))
    n = 300 if device.type == "cuda" else 3
    precisions = ("fp32", "tf32", "bf16") if device.type == "cuda" else ("fp32",)
    for prec in precisions:
        for name, cls in VARIANTS.items():
            try:
                ms = time_step(make_step(cls, prec, device), device, n)
            except Exception as e:  # noqa
                ms = f"failed: {type(e).__name__}: {e}"[:300]
            result["ms_per_step"][f"{name}-{prec}"] = ms
            print(f"{name:22s} {prec}  {ms if isinstance(ms, str) else f'{ms:.3f} ms/step'}", flush=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    if compiled:
        result["compiled"] = compile_probe(device, ("fp32", "bf16") if device.type == "cuda"
                                           else ("fp32",), n)
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
    if device.type == "cuda":
        for prec in ("fp32", "bf16"):
            try:
                p = kernel_profile(make_step(NeuralNetwork, prec, device))
            except Exception as e:  # noqa
                print(f"profile {prec} failed: {type(e).__name__}: {e}")
                continue
            result["profile"][prec] = p
            print(f"graphed step {prec}: {p['kernels_per_step']:.0f} kernels, "
                  f"{p['kernel_us_per_step']:.0f} us of kernels per step")
            for r in p["top"]:
                print(f"  {r['us_per_step']:8.1f} us  x{r['per_step']:4.1f}  {r['name']}")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--compile"]
    main(args[0] if args else "/tmp/probe.json", compiled="--compile" in sys.argv[1:])
