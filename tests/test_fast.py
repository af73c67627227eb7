"""nbutils.fast: the semantics of train_ch3, each precision mode, graph-ready optimizers; the bench."""
import json

import pytest
import torch
from torch import nn

import nbutils as nb
from nbutils.fast import FastTrainer, graph_safe, prepare_for_graphs
from nbutils.tools import bench, cpu
from nbutils.tools.sweep import make_cut_scheduler
from conftest import TINY


def device_loaders(root, batch_size=64, device="cpu", **kw):
    return nb.load_data_fashion_mnist_device(batch_size, device, root=root, spec=TINY, **kw)


def fresh(device="cpu", seed=0, optimizer="adam"):
    torch.manual_seed(seed)
    net = nb.init_weights(nb.NeuralNetwork()).to(device)
    return net, nb.make_optimizer(net, optimizer, 1e-3, 5e-4)


def train(net, train_iter, test_iter, epochs, opt, scheduler=None, fast=False, precision="fp32",
          device=None):
    """train_ch3 on the fast path where ``fast`` says so (True, or a FastTrainer of the test's own)."""
    loss = nn.CrossEntropyLoss()
    device = device or next(net.parameters()).device
    trainer = fast if isinstance(fast, FastTrainer) else \
        FastTrainer(net, loss, opt, device, precision) if fast else None
    return nb.train_ch3(net, train_iter, test_iter, loss, epochs, opt, scheduler, device,
                        trainer=trainer)


def test_fast_and_classic_agree_on_the_first_epoch(tiny_root):
    """Same batches (one DeviceLoader seed), same model seed, the same modules: fp32 results agree
    within 1e-5."""
    results = []
    for fast in (False, True):
        net, opt = fresh()
        train_iter, test_iter = device_loaders(tiny_root, seed=3)  # 200 images: 3 full + 1 partial
        history = train(net, train_iter, test_iter, 1, opt, nb.make_scheduler(opt), fast=fast)
        results.append((history[0], net))
    (a, net_a), (b, net_b) = results
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert b[key] == pytest.approx(a[key], abs=1e-5)
    for pa, pb in zip(net_a.state_dict().values(), net_b.state_dict().values()):
        assert torch.allclose(pa.float(), pb.float(), atol=1e-5)  # BatchNorm stats included


def test_partial_last_batch_is_trained_not_dropped(tiny_root):
    net, opt = fresh()
    train_iter, _ = device_loaders(tiny_root)
    trainer = FastTrainer(net, nn.CrossEntropyLoss(), opt, "cpu")
    trainer.train_epoch(net, train_iter, None, opt, "cpu")
    assert int(trainer.batch_no) == 4 and opt.state[net.stemLinear.weight]["step"] == 4
    dropping, _ = device_loaders(tiny_root, drop_last=True)
    trainer.train_epoch(net, dropping, None, opt, "cpu")
    assert int(trainer.batch_no) == 3


def test_scheduler_cut_takes_effect(tiny_root):
    """A learning rate set to 0 by the scheduler must stop Adam's updates (weight decay 0)."""
    torch.manual_seed(0)
    net = nb.NeuralNetwork()
    opt = nb.make_optimizer(net, "adam", 1e-3, 0.0)

    class CutToZero:
        def step(self):
            for g in opt.param_groups:
                g["lr"] = 0.0

    train_iter, test_iter = device_loaders(tiny_root)
    train(net, train_iter, test_iter, 1, opt, CutToZero(), fast=True)
    before = net.stemLinear.weight.detach().clone()
    history = train(net, train_iter, test_iter, 1, opt, CutToZero(), fast=True)
    assert history[-1]["lr"] == 0.0
    assert torch.equal(net.stemLinear.weight, before)


def test_fixed_cut_reaches_the_lr_tensor_a_graph_reads(tiny_root):
    """A CUDA graph reads the lr tensor it captured: the lr_cut claim's scheduler must end up in that
    tensor (torch fills it in place; older torch replaces it, and FastTrainer copies the value in)."""
    net = nb.NeuralNetwork()
    lr = torch.tensor(1e-3)
    opt = nb.make_optimizer(net, "adam", lr, 0.0)
    train_iter, test_iter = device_loaders(tiny_root)
    history = train(net, train_iter, test_iter, 2, opt, make_cut_scheduler(opt, epoch=1, factor=0.5),
                    fast=True)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(5e-4)
    assert history.column("lr") == pytest.approx([5e-4, 5e-4])


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_each_precision_mode_runs(tiny_root, precision):
    net, opt = fresh()
    # 50 images each way: bf16 is emulated, and slow, on CPUs without bf16 instructions.
    train_iter, test_iter = device_loaders(tiny_root, batch_size=25, train_subset=50,
                                           test_subset=50)
    history = train(net, train_iter, test_iter, 1, opt, fast=True, precision=precision)
    assert 0 < history[0]["train_loss"] < 10 and 0 <= history[0]["test_acc"] <= 1


def test_tf32_holds_through_the_backward_pass(tiny_root):
    """The matmul precision is read as each kernel starts: the backward's matmuls too must see it."""
    net, opt = fresh()
    seen = []
    net.stemLinear.weight.register_hook(  # runs as backward computes the weight's gradient
        lambda grad: seen.append(torch.get_float32_matmul_precision()))
    train_iter, _ = device_loaders(tiny_root, batch_size=25, train_subset=50, test_subset=50)
    before = torch.get_float32_matmul_precision()
    loss = nn.CrossEntropyLoss()
    FastTrainer(net, loss, opt, "cpu", precision="tf32").train_epoch(net, train_iter, loss, opt, "cpu")
    assert seen and set(seen) == {"high"}
    assert torch.get_float32_matmul_precision() == before


def test_fast_path_refuses_bad_input(tiny_root):
    net, opt = fresh()
    with pytest.raises(ValueError, match=r"precision must be one of \['fp32', 'tf32', 'bf16'\]"):
        FastTrainer(net, nn.CrossEntropyLoss(), opt, "cpu", precision="fp16")
    train_iter, test_iter = nb.load_data_fashion_mnist(64, root=tiny_root, num_workers=0, spec=TINY)
    with pytest.raises(ValueError, match="train_iter must be a DeviceLoader"):
        train(net, train_iter, test_iter, 1, opt, device="cpu", fast=True)
    with pytest.raises(ValueError, match="graphs=True needs CUDA"):
        FastTrainer(net, nn.CrossEntropyLoss(), opt, "cpu", graphs=True)


def test_fast_path_reports_divergence(tiny_root):
    net, opt = fresh()
    train_iter, test_iter = device_loaders(tiny_root)
    with torch.no_grad():
        net.stemLinear.weight.fill_(float("inf"))
    with pytest.raises(nb.TrainingDiverged, match=r"epoch 1: .*batch 0"):
        train(net, train_iter, test_iter, 1, opt, fast=True)


def test_bench_json_has_every_field(real_root, tmp_path):
    out = tmp_path / "bench.json"
    # Batch 32: bf16 is emulated, and slow, on CPUs without bf16 instructions.
    result = bench.run("cpu", steps=1, eval_images=64, out=out, root=real_root, batch_size=32)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    for key in ("device", "hardware", "torch", "parameters", "best_mixed_precision", "rows"):
        assert key in saved
    assert [r["mode"] for r in saved["rows"]] == ["my_utils", "train_ch3", "fast-fp32", "fast-bf16"]
    for row in saved["rows"]:
        assert list(row) == ["mode", "ms_per_step", "images_per_s", "epoch_s", "protocol_30_s", "setup_s",
                             "measured", "final_test_acc", "speedup_vs_my_utils",
                             "matmul_floor_ms_per_step", "acc_vs_fp32"]
        assert row["ms_per_step"] > 0 and row["epoch_s"] > 0
    assert saved["rows"][0]["speedup_vs_my_utils"] == 1.0
    assert saved["parameters"]["cpu_kernels"] is False
    fp32_floors = {r["matmul_floor_ms_per_step"] for r in saved["rows"] if r["mode"] != "fast-bf16"}
    assert len(fp32_floors) == 1 and fp32_floors.pop() > 0  # one fp32 floor, timed once
    fp32, bf16 = saved["rows"][2:]
    assert fp32["acc_vs_fp32"] is None
    if "emulated" in bf16["measured"]:  # other steps than fp32's: no like-for-like accuracy, no floor
        assert bf16["acc_vs_fp32"] is None and bf16["matmul_floor_ms_per_step"] is None
    else:
        assert bf16["acc_vs_fp32"] == pytest.approx(bf16["final_test_acc"] - fp32["final_test_acc"])


def test_the_gemm_floor_counts_three_products_of_every_linear_on_the_steps_shapes():
    gemms = bench.step_gemms(128)
    linears = [m for m in nb.NeuralNetwork().modules() if isinstance(m, nn.Linear)]
    assert len(gemms) == len(linears)
    assert gemms[0] == (128 * 49, 16, 256)  # the stem: every 4x4 patch of every image
    # 3 x 52.5 M multiply-adds an image, as reports/bench/README.md derives the floor from
    assert sum(n * k * m for n, k, m in gemms) / 128 == pytest.approx(52.5e6, rel=0.02)


def test_bench_times_fewer_steps_where_bf16_is_emulated_and_prints_rows_as_they_come(
        real_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "bf16_emulated", lambda: True)
    result = bench.run("cpu", steps=5, eval_images=64, modes=["fast-fp32", "fast-bf16"],
                       out=tmp_path / "bench.json", root=real_root, batch_size=8)
    fp32, bf16 = result["rows"]
    assert fp32["measured"] == "5 steps + 64 test images, projected"
    assert bf16["measured"] == "3 steps + 64 test images, projected (bf16 emulated on this CPU)"
    lines = capsys.readouterr().out.splitlines()
    table = bench.markdown_table(result, "bench.json").splitlines()
    assert lines[0].startswith(result["hardware"]) and lines[1:3] == table[2:4]  # the header
    assert lines[3:5] == table[4:6]  # each row as the report shows it
    assert lines[5] == f"written: {tmp_path / 'bench.json'}"


def test_bf16_counts_as_emulated_exactly_on_a_cpu_without_bf16_instructions():
    native = [getattr(torch.cpu, f, None) for f in ("_is_avx512_bf16_supported",
                                                     "_is_amx_tile_supported")]
    if None in native:
        pytest.skip("this torch cannot say whether the CPU has bf16 instructions")
    assert bench.bf16_emulated() is not any(f() for f in native)


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "steps must be >= 1, got 0"),
    (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
    (["--epochs", "-1"], "epochs must be >= 0, got -1"),
    (["--stack", "0,2"], "stack sizes must be >= 1, got [0, 2]"),
    (["--stack", ""], "stack sizes must be >= 1, got []"),
    (["--stack", "1,2", "--batch-size", "0"], "batch_size must be >= 1, got 0"),
    (["--modes", "fast-fp32,fast"], "modes must be among ['my_utils', 'train_ch3', 'fast-fp32', "
                                    "'fast-tf32', 'fast-bf16'], got ['fast']"),
    pytest.param(["--device", "cpu", "--modes", "fast-tf32"], "fast-tf32 is a GPU mode",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU-only refusal")),
])
def test_bench_refuses_bad_arguments_before_measuring(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main([*args, "--out", str(tmp_path / "bench.json")])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()


def test_bench_refuses_a_folder_as_its_json_before_measuring(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "measure", lambda *a, **k: pytest.fail("measured"))
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--device", "cpu", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert f"out must be a JSON file's path, and {tmp_path} is a folder" in capsys.readouterr().err


def test_bench_times_the_fast_path_with_the_cpu_kernels_only_when_asked(monkeypatch):
    kinds = []

    def stop(mode, net, *args, **kwargs):  # what the mode would be measured with, and no further
        kinds.append((mode, type(net.Block1_Dropout)))
        raise StopIteration

    monkeypatch.setattr(bench, "loaders_and_trainer", stop)
    for kernels in (False, True):
        for mode in ("my_utils", "fast-fp32"):
            with pytest.raises(StopIteration):
                bench.measure(mode, None, torch.device("cpu"), 1, 1, 0, kernels=kernels)
    assert kinds == [("my_utils", nn.Dropout), ("fast-fp32", nn.Dropout),
                     ("my_utils", nn.Dropout), ("fast-fp32", cpu.Dropout)]


def test_graph_safe_optimizers():
    """Which steps FastTrainer captures: those that say so, and fused SGD with a tensor lr."""
    params = list(nn.Linear(3, 2).parameters())
    lr = torch.tensor(1e-3)
    assert graph_safe(torch.optim.Adam(params, lr=lr, capturable=True))
    assert graph_safe(torch.optim.ASGD(params, lr=lr, capturable=True))
    assert graph_safe(torch.optim.SGD(params, lr=lr, fused=True))
    assert not graph_safe(torch.optim.SGD(params, lr=1e-3, fused=True))  # a float lr is baked in
    assert not graph_safe(torch.optim.Adam(params)) and not graph_safe(torch.optim.SGD(params, lr=1))
    for name in nb.OPTIMIZERS:  # on the CPU nothing is captured: the optimizers stay as they were
        opt = nb.make_optimizer(nn.Linear(3, 2), name)
        assert not prepare_for_graphs(opt, "cpu") and opt.param_groups[0]["lr"] == 1e-3


@pytest.mark.cuda
@pytest.mark.parametrize("optimizer", sorted(nb.OPTIMIZERS))
def test_cuda_optimizers_are_made_capturable_in_place(optimizer):
    layer = nn.Linear(3, 2).cuda()
    opt = nb.make_optimizer(layer, optimizer, 1e-3, 5e-4)
    plateau = nb.make_scheduler(opt)
    assert prepare_for_graphs(opt, "cuda") and graph_safe(opt)
    assert all(torch.is_tensor(g["lr"]) and g["lr"].is_cuda for g in opt.param_groups)
    assert plateau.optimizer is opt and opt.param_groups[0]["weight_decay"] == 5e-4
    layer(torch.ones(4, 3, device="cuda")).sum().backward()
    opt.step()  # the converted optimizer steps


def test_a_stepped_or_unknown_optimizer_is_left_as_it_is():
    layer = nn.Linear(3, 2)
    rmsprop = torch.optim.RMSprop(layer.parameters())
    assert not prepare_for_graphs(rmsprop, "cuda") and rmsprop.param_groups[0]["lr"] == 0.01
    adam = nb.make_optimizer(layer)
    layer(torch.ones(1, 3)).sum().backward()
    adam.step()
    assert not prepare_for_graphs(adam, "cuda") and adam.param_groups[0]["lr"] == 1e-3


@pytest.mark.cuda
def test_cuda_graphs_train_and_learn(tiny_root):
    net, opt = fresh("cuda")
    train_iter, test_iter = device_loaders(tiny_root, device="cuda")
    trainer = FastTrainer(net, nn.CrossEntropyLoss(), opt, "cuda")
    assert trainer.graphs
    history = train(net, train_iter, test_iter, 4, opt, fast=trainer)
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.cuda
@pytest.mark.parametrize("optimizer", sorted(nb.OPTIMIZERS))
def test_cuda_graph_epoch_equals_eager_epoch(tiny_root, optimizer):
    """With dropout off nothing random is drawn, so replaying the captured step must give what eager
    steps give: capture's warm-up left no trace, and every replay read the new batch and weights."""
    results = []
    for graphs in (False, True):
        net, opt = fresh("cuda", optimizer=optimizer)
        for m in net.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        train_iter, _ = device_loaders(tiny_root, device="cuda", seed=3)
        trainer = FastTrainer(net, nn.CrossEntropyLoss(), opt, "cuda", graphs=graphs)
        stats = trainer.train_epoch(net, train_iter, nn.CrossEntropyLoss(), opt, "cuda")
        results.append((stats, [p.detach().clone() for p in net.parameters()]))
    (a, weights_a), (b, weights_b) = results
    assert a == pytest.approx(b, abs=1e-5)
    assert max(float((x - y).abs().max()) for x, y in zip(weights_a, weights_b)) < 1e-4


@pytest.mark.cuda
@pytest.mark.parametrize("optimizer", sorted(nb.OPTIMIZERS))
@pytest.mark.parametrize("kind", ["plateau", "fixed"])
def test_cuda_graph_sees_scheduler_cut(tiny_root, optimizer, kind):
    net, opt = fresh("cuda", optimizer=optimizer)
    train_iter, test_iter = device_loaders(tiny_root, device="cuda", drop_last=True)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=1e-12, threshold=1e9) \
        if kind == "plateau" else make_cut_scheduler(opt, epoch=1, factor=1e-12)
    for g in opt.param_groups:
        g["weight_decay"] = 0.0
    trainer = FastTrainer(net, nn.CrossEntropyLoss(), opt, "cuda")
    history = train(net, train_iter, test_iter, 2, opt, sched, fast=trainer)
    assert history[-1]["lr"] < 1e-13
    before = [p.detach().clone() for p in net.parameters()]
    train(net, train_iter, test_iter, 1, opt, None, fast=trainer)  # the same graphs, replayed
    assert all(torch.allclose(a, b, atol=1e-9) for a, b in zip(before, net.parameters()))


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_cuda_fast_and_classic_agree_statistically(tiny_root, precision):
    accs = []
    for fast in (False, True):
        net, opt = fresh("cuda")
        train_iter, test_iter = device_loaders(tiny_root, device="cuda", seed=3)
        kw = {"precision": precision} if fast else {}
        accs.append(train(net, train_iter, test_iter, 3, opt, fast=fast, **kw)[-1]["test_acc"])
    assert abs(accs[0] - accs[1]) < 0.15


def _bench_result(device, parameters, modes):
    row = dict(ms_per_step=692.3, images_per_s=184.9, epoch_s=344.4, protocol_30_s=10_332.0,
               speedup_vs_my_utils=1.534, measured="20 steps + 2000 test images, projected",
               final_test_acc=0.6425, matmul_floor_ms_per_step=351.04, acc_vs_fp32=None)
    return dict(device=device, hardware="A CPU", torch="2.14.1", cuda=None,
                created="2026-11-28 01:48:47", parameters=parameters,
                rows=[dict(row, mode=m) for m in modes])


def test_a_bench_table_names_its_file_and_the_command_that_measures_it_again():
    result = _bench_result("cpu", dict(batch_size=64, steps=20, eval_images=500, epochs=0,
                                       baseline_epochs=None, cpu_kernels=True),
                           ["my_utils", "fast-fp32"])
    table = bench.markdown_table(result, "reports/bench/x.json")
    assert table.splitlines()[0] == (
        "`reports/bench/x.json`: A CPU, torch 2.14.1, batch 64, 2026-11-28 01:48. Rerun: `python3 -m "
        "nbutils bench --device cpu --eval-images 500 --batch-size 64 --modes my_utils,fast-fp32 "
        "--cpu-kernels --out reports/bench/x.json`")
    assert ("| fast-fp32 | 692 | 351 | 185 | 344 | 2.9 h | 1.53× | 64.25 % | 20 steps + 2000 test images, "
            "projected |" in table.splitlines())
    result["rows"][1].update(mode="fast-bf16", acc_vs_fp32=-0.003, matmul_floor_ms_per_step=None)
    assert "| fast-bf16 | 692 | – | 185 | 344 | 2.9 h | 1.53× | 64.25 % (-0.30 vs fp32) |" in \
        bench.markdown_table(result, "reports/bench/x.json")
    # A GPU run of every mode at the defaults, into the default file, needs no other option.
    gpu = _bench_result("cuda", dict(batch_size=128, steps=20, eval_images=2000, epochs=30,
                                     baseline_epochs=1), bench.MODES)
    assert bench.rerun_command(gpu, "reports/bench/bench-cuda.json") == (
        "python3 -m nbutils bench --device cuda --epochs 30")


def test_the_reports_speed_tables_are_the_committed_json_rendered():
    named = bench.report_tables()
    assert {"reports/bench/bench-cpu.json", "reports/bench/bench-cuda-h100.json"} <= set(named)
    text = bench.REPORT.read_text()
    assert bench.render_tables(text) == text, "regenerate: python3 -m nbutils bench --tables-only"


def test_a_bench_run_rewrites_the_table_of_the_file_it_writes(real_root, tmp_path, monkeypatch,
                                                              capsys):
    out, readme = tmp_path / "bench.json", tmp_path / "README.md"
    readme.write_text(f"intro\n\n<!-- bench table: {out} -->\nold\n<!-- end of bench table -->\n\nend\n")
    monkeypatch.setattr(bench, "REPORT", readme)
    result = bench.run("cpu", steps=1, eval_images=64, modes=["fast-fp32"], out=out,
                       root=real_root, batch_size=8)
    text = readme.read_text()
    assert text == (f"intro\n\n<!-- bench table: {out} -->\n{bench.markdown_table(result, str(out))}"
                    "\n<!-- end of bench table -->\n\nend\n")
    assert capsys.readouterr().out.splitlines()[-1] == f"updated: {readme}"


def test_bench_tables_only_names_a_missing_file(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench table: reports/bench/gone.json -->\n<!-- end of bench table -->\n")
    monkeypatch.setattr(bench, "REPORT", readme)
    with pytest.raises(SystemExit):
        bench.main(["--tables-only"])
    assert "names reports/bench/gone.json, which is not a file" in capsys.readouterr().err
    monkeypatch.setattr(bench, "REPORT", tmp_path / "none" / "README.md")  # installed, no checkout
    with pytest.raises(SystemExit):
        bench.main(["--tables-only"])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "the checkout's reports/bench/README.md, and there is none" in err
