"""Issue 31's question, measured: does torch.compile (inductor's C++ backend) make the coursework's
fp32 training step on a CPU faster than the eager step that my_utils' loop and the fast path run,
and does it match nbutils/tools/cpu.py's oneDNN Linear and cheaper dropout mask?

    python3 reports/bench/compile_cpu.py [--rounds 12] [--out reports/bench/compile-cpu.json]

One process, one batch of 128 random images, the model, loss and Adam of notebook 04 (`build`).
Configurations are timed round-robin, one step of each per round, so that a change of load hits
them alike; each gets its own freshly built model and optimizer. Compile time (the first two calls,
cold cache) is measured and reported apart. Also measured here: the step's GEMM floor (every
Linear's forward and two backward products as torch.mm). Where no C++ compiler works, the compiled
configurations are skipped with one printed line, and eager is still timed.
"""
import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

# A cold compile is part of what is measured: inductor reads its cache folder when it is imported.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-"))
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch._inductor.cpp_builder import get_cpp_compiler  # noqa: E402

from nbutils.coursework import build  # noqa: E402
from nbutils.fast import tune_cpu_allocator  # noqa: E402
from nbutils.runs import Run, hardware  # noqa: E402
from nbutils.tools import cpu  # noqa: E402
from nbutils.tools.bench import matmul_floor_ms  # noqa: E402

CONFIGS = {  # name: (Adam's extra options, what torch.compile wraps or cpu.py's kernels, inductor options)
    "eager": ({}, None, {}),
    "eager, cpu.py's oneDNN Linear": ({}, {nn.Linear: cpu.Linear}, {}),
    "eager, cpu.py's Linear and dropout mask": ({}, cpu.KERNELS, {}),
    "compiled model": ({}, "net", {}),
    "compiled step, fused Adam": ({"fused": True}, "step", {}),
    "compiled step, fused Adam, eager RNG": ({"fused": True}, "step", {"fallback_random": True}),
}


def make_step(adam, wrap, options):
    net, loss, optimizer, _ = build(Run())
    if adam:  # the same Adam with torch's fused CPU kernel
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=5e-4, **adam)
    for module in net.modules():  # cpu.py's kernels: the module's class switched, as cpu_kernels does
        if isinstance(wrap, dict) and type(module) in wrap:
            module.__class__ = wrap[type(module)]
    model = torch.compile(net, options=options) if wrap == "net" else net

    def step(X, y):
        optimizer.zero_grad(set_to_none=True)
        loss(model(X), y).backward()
        optimizer.step()
    return torch.compile(step, options=options) if wrap == "step" else step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--out", default=str(Path(__file__).with_name("compile-cpu.json")))
    args = parser.parse_args(argv)
    tune_cpu_allocator("cpu")  # as notebook 04 and the bench do
    try:
        get_cpp_compiler()
        names = list(CONFIGS)
    except Exception as e:  # noqa: BLE001 - inductor raises its own InvalidCxxCompiler
        print(f"torch.compile unavailable here ({type(e).__name__}): timing the eager steps only")
        names = [name for name, (_, wrap, _) in CONFIGS.items() if wrap not in ("net", "step")]
    g = torch.Generator().manual_seed(0)
    X, y = (torch.rand(128, 1, 28, 28, generator=g) - 0.286) / 0.353, torch.randint(0, 10, (128,))
    steps, compile_s = {}, {}
    for name in names:
        steps[name] = make_step(*CONFIGS[name])
        start = time.perf_counter()
        for _ in range(2):
            steps[name](X, y)
        compile_s[name] = time.perf_counter() - start
        print(f"{name}: first two steps {compile_s[name]:.1f} s", flush=True)
    ms = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            start = time.perf_counter()
            steps[name](X, y)
            ms[name].append(1000 * (time.perf_counter() - start))
    rows = [dict(config=name, ms_per_step=statistics.median(ms[name]),
                 vs_eager=statistics.median(e / t for e, t in zip(ms["eager"], ms[name])),
                 first_two_steps_s=compile_s[name]) for name in names]
    result = dict(hardware=hardware("cpu"), torch=torch.__version__, rounds=args.rounds,
                  inductor_cache=os.environ["TORCHINDUCTOR_CACHE_DIR"],
                  load_after=os.getloadavg()[0], matmul_floor_ms_per_step=matmul_floor_ms(
                      torch.device("cpu"), "fp32", 128), rows=rows)
    for r in rows:
        print(f"{r['config']:40s} {r['ms_per_step']:7.1f} ms a step, {r['vs_eager']:.2f}x eager's "
              f"speed, first two steps {r['first_two_steps_s']:.1f} s")
    print(f"GEMM floor {result['matmul_floor_ms_per_step']:.1f} ms a step; written: {args.out}")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
