"""nbutils.tools.sweep, claims and ablations: the plan, the honest protocol, the tables and their verdicts."""
import io
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

import nbutils as nb
from nbutils.tools import ablations, claims, protocol, recipe, sweep
from nbutils.tools.protocol import stratified_split, val_size_for
from nbutils.io import atomic_write_json
from nbutils.params import resolve


def base(**kw):
    return nb.as_dict(*resolve("seed", device="cpu", **kw))


def test_stratified_split_holds_out_each_class_in_its_share():
    labels = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)
    kept, held = stratified_split(labels, 100)
    assert torch.bincount(labels[held]).tolist() == [60, 30, 10]
    assert len(set(kept.tolist()) | set(held.tolist())) == 1000 and not set(kept.tolist()) & set(held.tolist())
    assert torch.equal(held, stratified_split(labels, 100)[1])  # one fixed draw
    for bad in (0, 1000, 2.5):
        with pytest.raises(ValueError, match="val_size must be an integer between 1 and 999"):
            stratified_split(labels, bad)


def test_plan_shares_runs_and_reads_epochs_off_the_longest(tmp_path):
    wanted = [claims.CLAIMS["fast_path"], claims.CLAIMS["batch_size"], claims.CLAIMS["epochs"]]
    specs = claims.plan(wanted, [0, 1], base(fast="on"), tmp_path)
    names = [sweep.Path(s["folder"]).name for s in specs.values()]
    # "graphs fp32" and "batch_size 128" are the base run; the epochs claim trains 200 epochs once
    assert names.count("report-protocol-s0") == 1 and "graphs-fp32-s0" not in names
    assert "batch-size-128-s0" not in names and "epochs-200-s1" in names
    assert "graphs-bf16-s0" in names and "eager-fp32-s1" in names
    assert not [n for n in names if n.startswith("epochs-") and n[7:10] != "200"]
    assert len(names) == 2 * (3 + 6 + 1)  # eager, bf16, base; 6 batch sizes; epochs 200


def test_recipe_rows_train_honestly_in_bf16(tmp_path):
    specs = claims.plan([claims.CLAIMS["recipe"]], [0], base(fast="on"), tmp_path).values()
    assert len(specs) == len(recipe.INGREDIENTS)
    assert {(s["params"]["precision"], s["protocol"]) for s in specs} == {("bf16", "honest")}


def fake_run(root, label, seed, final, top=None, history=None, seconds=10.0, stack=1, **overrides):
    """A finished run folder, as run_one (or run_stack, ``stack`` > 1) writes it, with made-up
    numbers."""
    spec = claims.run_spec(label, dict(overrides), seed, base(fast="on"))
    folder = root / "runs" / f"{claims._slug(label)}-s{seed}"
    folder.mkdir(parents=True)
    if history is not None:
        atomic_write_json(folder / "history.json", history)
    atomic_write_json(folder / "metrics.json", dict(
        final_test_acc=final, max_test_acc=top or final, train_seconds=seconds, params=spec["params"],
        protocol=spec["protocol"], scheduler=spec["scheduler"], ingredient=spec["recipe"],
        recipe=claims.recipe_settings(spec), label=label, seed=seed, stack=stack))
    return folder


def test_stacked_runs_are_set_beside_the_same_settings_trained_alone(tmp_path, capsys):
    alone, stacked = tmp_path / "alone", tmp_path / "stacked"
    for seed, final in enumerate((0.890, 0.892, 0.894)):
        fake_run(alone, "report protocol", seed, final)
        fake_run(alone, "init xavier_normal", seed, 0.880 + seed / 1000, init="xavier_normal")
    fake_run(stacked, "init kaiming_uniform", 0, 0.891, stack=8)  # the report's run, named by init
    fake_run(stacked, "init kaiming_uniform", 1, 0.899, stack=8)
    fake_run(stacked, "init xavier_normal", 0, 0.881, stack=8, init="xavier_normal")
    fake_run(stacked, "init xavier_uniform", 0, 0.870, stack=8, init="xavier_uniform")  # never alone
    table = ablations.stack_comparison(stacked, alone).splitlines()
    assert len(table) == 4
    assert table[2] == ("| init kaiming_uniform | 0, 1 | 89.00, 89.20 | 89.10, 89.90 | "
                        "89.20 ± 0.20 (3 runs) | 89.50 ± 0.57 | 1 of 2 |")
    assert table[3].startswith("| init xavier_normal | 0 | 88.00 | 88.10 | 88.10 ± 0.10 (3 runs) |")
    assert table[3].endswith("| 1 of 1 |")
    assert ablations.stack_comparison(alone, alone) is None  # nothing there trained in a stack
    assert sweep.main(["--tables-only", "--claims", "init", "--out", str(stacked),
                       "--compare-with", str(alone)]) == 0
    assert (stacked / "stacked-vs-single.md").read_text().splitlines() == table
    with pytest.raises(SystemExit):
        sweep.main(["--tables-only", "--out", str(stacked), "--compare-with", str(tmp_path / "none")])
    assert "--compare-with must be a sweep folder" in capsys.readouterr().err


def test_verdicts_follow_the_data(tmp_path):
    claim = claims.CLAIMS["optimizer"]
    for seed, noise in enumerate((-0.001, 0.0, 0.001)):
        fake_run(tmp_path, "report protocol", seed, 0.89 + noise)
        fake_run(tmp_path, "sgd", seed, 0.80 + noise, optimizer="sgd")
        fake_run(tmp_path, "asgd", seed, 0.891 + noise, optimizer="asgd")
    rows = ablations.summarize(claim, [0, 1, 2], tmp_path, base(fast="on"))
    assert rows[0]["final"] == pytest.approx(0.89) and rows[0]["final_sd"] == pytest.approx(0.001)
    said = ablations.verdict(claim, rows)
    assert said.startswith("not supported") and "optimizer asgd" in said and "optimizer sgd" in said
    rows[2]["final"] = 0.95  # far above the spread: the claim is refuted
    assert ablations.verdict(claim, rows).startswith("does not hold: optimizer asgd")
    rows[2]["final"] = 0.70
    assert ablations.verdict(claim, rows).startswith("holds")


def test_scheduler_verdict_says_whether_the_scheduler_ever_acted(tmp_path):
    claim = claims.CLAIMS["scheduler"]
    flat = [dict(epoch=e, test_acc=0.89, lr=1e-3) for e in (1, 2)]
    for seed in (0, 1):
        fake_run(tmp_path, "report protocol", seed, 0.89 + seed / 1000, history=flat)
        fake_run(tmp_path, "no scheduler", seed, 0.89 + seed / 1000, history=flat, scheduler="none")
    rows = ablations.summarize(claim, [0, 1], tmp_path, base(fast="on"))
    assert [r["lr_cut"] for r in rows] == [0, 0]
    assert "never cut the learning rate in any of the 2 runs" in ablations.verdict(claim, rows)
    one = ablations.summarize(claim, [0], tmp_path, base(fast="on"))
    assert "never cut the learning rate in its one run, so" in ablations.verdict(claim, one)
    cut = [dict(epoch=1, test_acc=0.89, lr=1e-3), dict(epoch=2, test_acc=0.9, lr=1e-4)]
    atomic_write_json(tmp_path / "runs" / "report-protocol-s1" / "history.json", cut)
    rows = ablations.summarize(claim, [0, 1], tmp_path, base(fast="on"))
    assert rows[0]["lr_cut"] == 1 and "never cut" not in ablations.verdict(claim, rows)


def test_lr_cut_claim_replays_the_reports_cut_and_sets_it_beside_the_reports_numbers(tmp_path):
    claim = claims.CLAIMS["lr_cut"]
    specs = claims.plan([claims.CLAIMS["scheduler"], claim], [0], base(fast="on"), tmp_path).values()
    assert sorted(sweep.Path(s["folder"]).name for s in specs) == \
        ["lr-cut-after-epoch-18-s0", "no-scheduler-s0", "report-protocol-s0"]  # the base is shared
    opt = nb.make_optimizer(torch.nn.Linear(2, 2))
    cut = sweep.scheduler_maker("cut18", 15)(opt)
    assert isinstance(cut, torch.optim.lr_scheduler.MultiStepLR) and dict(cut.milestones) == {18: 1}

    def history(cut_to):  # a record's lr is the one after that epoch's scheduler step
        return [dict(epoch=e, test_acc=0.89, lr=1e-3 if e < 18 else cut_to) for e in range(1, 31)]
    for seed in (0, 1):
        fake_run(tmp_path, "lr cut after epoch 18", seed, 0.899 + seed / 1000, top=0.901,
                 history=history(1e-4), scheduler="cut18")
        fake_run(tmp_path, "report protocol", seed, 0.890 + seed / 1000, history=history(1e-3))
    rows = ablations.summarize(claim, [0, 1], tmp_path, base(fast="on"))
    assert [r["lr_cut"] for r in rows] == [2, 0]
    said = ablations.verdict(claim, rows)
    assert said.startswith("holds: lr cut after epoch 18 beat every alternative")
    assert said.endswith("final test accuracy is 89.95 ± 0.07 % and the best epoch 90.10 ± 0.00 %, "
                         "against the report's 89.88 % and 90.05 %")
    rows[0]["lr_cut"] = 0  # e.g. the smoke profile: one epoch, the cut never comes
    assert "the cut never happened" in ablations.verdict(claim, rows)


def test_fast_path_verdict_also_compares_the_last_epochs(tmp_path):
    """A final epoch that dips is not a mode that lost accuracy: the verdict says both."""
    claim = claims.CLAIMS["fast_path"]
    def history(*accs):
        return [dict(epoch=e, test_acc=a, lr=1e-3) for e, a in enumerate(accs, 1)]
    steady = history(0.80, 0.890, 0.886, 0.890, 0.886, 0.890)
    dipped = history(0.80, 0.890, 0.886, 0.890, 0.890, 0.884)
    for seed in (0, 1):
        fake_run(tmp_path, "eager", seed, 0.890, history=steady, fast="eager", precision="fp32")
        fake_run(tmp_path, "graphs", seed, 0.890, history=steady, fast="on", precision="fp32")
        fake_run(tmp_path, "bf16", seed, 0.884, history=dipped, fast="on", precision="bf16")
    rows = ablations.summarize(claim, [0, 1], tmp_path, base(fast="on"))
    assert rows[2]["late"] == pytest.approx(0.888) and rows[0]["late"] == pytest.approx(0.8884)
    assert rows[0]["swing"] == pytest.approx(0.004)
    said = ablations.verdict(claim, rows)
    assert said.startswith("does not hold: mean final accuracy against eager fp32: graphs fp32 +0.00, "
                           "graphs bf16 -0.60 points (allowed: within 0.30)")
    assert ("last 5 epochs: graphs fp32 +0.00, graphs bf16 -0.04 points; over those epochs one run's "
            "test accuracy moved by 0.40 points") in said
    for r in rows:  # without per-epoch test accuracy there is nothing steadier to add
        r["late"] = None
    assert "last 5 epochs" not in ablations.verdict(claim, rows)


def test_late_epochs_need_a_test_accuracy_in_every_one_of_them():
    assert ablations._late(None) == (None, None)
    assert ablations._late([dict(test_acc=None, val_acc=0.9)] * 6) == (None, None)  # the honest protocol
    assert ablations._late([dict(test_acc=0.5), dict(test_acc=0.7)]) == (pytest.approx(0.6),
                                                                    pytest.approx(0.2))


def test_table_marks_times_of_runs_that_shared_the_device():
    row = dict(label="a", n=3, final=0.9, final_sd=0.01, max=None, max_sd=None, seconds=30.0,
               ran_on=["H100"])
    rows = [dict(row, jobs=1), dict(row, label="b", jobs=8), dict(row, label="c", jobs=0),
            dict(row, label="d", jobs=1, stack=8)]
    table = ablations.format_table(rows).splitlines()
    assert table[2].endswith("| 30.0 |") and table[3].endswith("| 30.0 * |")
    assert table[5].endswith("| 30.0 † |") and table[6] == ""
    notes = table[7]
    assert notes.startswith("Trained on H100.") and "b: 8 runs shared the device" in notes
    assert "c: these runs trained before the sweep recorded" in notes and " a:" not in notes
    assert "† d: trained in stacks of up to 8 runs" in notes and "† b" not in notes


def test_a_missing_seed_leaves_the_claim_without_a_table(tmp_path):
    claim = claims.CLAIMS["scheduler"]
    for seed in (0, 1):
        fake_run(tmp_path, "report protocol", seed, 0.9)
        fake_run(tmp_path, "no scheduler", seed, 0.9, scheduler="none")
    assert ablations.summarize(claim, [0, 1], tmp_path, base(fast="on"))[1]["runs"] == \
        ["no-scheduler-s0", "no-scheduler-s1"]
    assert ablations.summarize(claim, [0, 1, 2], tmp_path, base(fast="on")) is None
    report = ablations.write_tables([claim], [0, 1, 2], tmp_path, dict(command="test", protocol="p"),
                                base(fast="on"))
    assert report["claims"]["scheduler"] is None
    assert "has no table yet" in (tmp_path / "README.md").read_text()


def test_an_unfinished_claim_shows_its_finished_rows_without_a_verdict(tmp_path, monkeypatch):
    claim = claims.CLAIMS["scheduler"]
    for seed in (0, 1, 2):
        fake_run(tmp_path, "report protocol", seed, 0.89 + seed / 1000)
    fake_run(tmp_path, "no scheduler", 0, 0.95, scheduler="none")  # seeds 1 and 2 missing
    rows = ablations.summarize(claim, [0, 1, 2], tmp_path, base(fast="on"))
    assert [r["label"] for r in rows] == ["report protocol"] and rows[0]["final"] == pytest.approx(0.891)
    report = ablations.write_tables([claim], [0, 1, 2], tmp_path, dict(command="test", protocol="p"),
                                base(fast="on"))
    shown = report["claims"]["scheduler"]
    assert shown["verdict"] is None and shown["missing"] == ["no scheduler"]
    text = (tmp_path / "README.md").read_text()
    assert "no verdict yet" in text and "| report protocol | 3 | 89.10 ± 0.10 |" in text
    assert "**Verdict:**" not in text and "| no scheduler |" not in text
    assert not (tmp_path / "scheduler.png").exists()
    shown_md = []
    monkeypatch.setattr(ablations, "display", lambda obj: shown_md.append(obj.data))
    ablations.show_report(report, tmp_path)
    assert "still missing: no scheduler" in shown_md[0] and "89.10 ± 0.10" in shown_md[0]
    ablations.show_report(report, tmp_path, keys=["recipe"])  # notebook 07 shows only its own claim
    assert len(shown_md) == 1


def test_a_recipe_run_is_found_by_its_settings_not_its_name(tmp_path, monkeypatch):
    """A run made before the recipe changed must not stand in the new recipe's table."""
    claim = claims.CLAIMS["recipe"]
    specs = claims.plan([claim], [0], base(fast="on"), tmp_path)
    first = next(iter(specs.values()))
    fake_run(tmp_path, "full recipe", 0, 0.93, recipe="full recipe", precision="bf16")
    assert claims.spec_key(first) in claims.finished_runs(tmp_path)
    assert len(sweep.unfinished(list(specs.values()))) == len(specs) - 1
    monkeypatch.setitem(recipe.INGREDIENTS, "full recipe", {"epochs": 50})  # the recipe changes
    assert claims.spec_key(first) not in claims.finished_runs(tmp_path)
    assert len(sweep.unfinished(list(specs.values()))) == len(specs)


def test_epochs_rows_are_prefixes_of_the_long_run(tmp_path):
    claim = claims.CLAIMS["epochs"]
    history = [dict(epoch=e, test_acc=e / 1000) for e in range(1, 201)]
    history[14]["test_acc"] = 0.5  # a peak at epoch 15 is the max of every prefix that contains it
    fake_run(tmp_path, "a long run", 0, 0.2, history=history, seconds=200.0, epochs=200)
    rows = {r["label"]: r for r in ablations.summarize(claim, [0], tmp_path, base(fast="on"))}
    assert rows["epochs 10"]["final"] == 0.010 and rows["epochs 10"]["max"] == 0.010
    assert rows["epochs 30"]["final"] == 0.030 and rows["epochs 30"]["max"] == 0.5
    assert rows["epochs 200"]["final"] == 0.200 and rows["epochs 30"]["seconds"] == pytest.approx(30.0)


def test_honest_run_touches_the_test_set_once(tmp_path, monkeypatch):
    """Validation drives the scheduler and the selection; the test set is evaluated once, at the end."""
    seen = []
    real = sweep.evaluate

    def counting(net, data_iter, *a, **kw):
        seen.append(len(data_iter.dataset))
        return real(net, data_iter, *a, **kw)

    monkeypatch.setattr(sweep, "evaluate", counting)  # the final test
    monkeypatch.setattr(protocol, "evaluate", counting)  # every epoch's, in train_ch3 (my_utils' loop)
    params = nb.as_dict(*resolve("smoke", device="cpu", epochs=3, train_subset=120, test_subset=50))
    spec = dict(claims.run_spec("honest protocol", {"protocol": "honest"}, 0, params),
                folder=str(tmp_path / "runs" / "honest-protocol-s0"))
    metrics = sweep.run_one(spec)
    n_val = val_size_for(nb.from_dict(spec["params"])[0])
    assert seen == [n_val] * 3 + [50]
    history = json.loads((tmp_path / "runs" / "honest-protocol-s0" / "history.json").read_text())
    assert all(r["test_acc"] is None and r["val_acc"] is not None for r in history)
    assert metrics["selected_epoch"] == max(history, key=lambda r: (r["val_acc"], -r["epoch"]))["epoch"]
    assert metrics["max_test_acc"] is None and 0 <= metrics["final_test_acc"] <= 1


def test_sweep_command_smoke(tmp_path, capsys):
    """The command end to end on the CPU: runs as one stack (--stack 4), or in their own processes
    (--jobs 2), into the run folders a single run writes, finished runs reused, then tables and
    plots. In this process where it can be (torch is imported once), in a subprocess for --jobs."""
    out = tmp_path / "ablations"
    args = ["--profile", "smoke", "--seeds", "0,1", "--out", str(out)]
    assert sweep.main(args + ["--claims", "scheduler", "--stack", "4"]) == 0
    printed = capsys.readouterr().out
    assert "in stacks of up to 4" in printed and printed.count("(a stack of 4)") == 4
    for folder in (out / "runs").iterdir():
        assert {p.name for p in folder.iterdir()} == {"params.json", "history.json", "history.csv",
                                                      "metrics.json"}
        assert json.loads((folder / "metrics.json").read_text())["stack"] == 4
    assert not list((out / "stacks").glob("*.pt"))  # the stack's checkpoint is gone once it finished
    report = json.loads((out / "ablations.json").read_text())
    rows = report["claims"]["scheduler"]["rows"]
    assert [r["label"] for r in rows] == ["report protocol", "no scheduler"] and rows[0]["n"] == 2
    assert (out / "scheduler.png").stat().st_size > 0 and "**Verdict:**" in (out / "README.md").read_text()
    # the protocol claim shares the base runs and trains only its honest ones, two processes at once
    again = subprocess.run([sys.executable, "-m", "nbutils.tools.sweep", *args, "--claims",
                            "protocol", "--jobs", "2"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 of 4 runs already finished" in again.stdout and again.stdout.count("done ") == 2
    assert re.search(r"done honest-protocol-s0 in \d+ s: final test acc \d+\.\d\d %", again.stdout)
    assert sweep.main(args + ["--claims", "scheduler,protocol", "--tables-only"]) == 0
    tables = capsys.readouterr().out
    assert "scheduler: " in tables and "protocol: " in tables
    assert "incomplete" not in tables and "done " not in tables


def test_max_runs_trains_the_first_unfinished_runs_in_plan_order(tmp_path, monkeypatch):
    specs = list(claims.plan([claims.CLAIMS["scheduler"]], [0, 1], base(fast="on"), tmp_path).values())
    fake_run(tmp_path, "report protocol", 0, 0.89)  # finished already: not counted
    trained = []

    def train(spec):
        trained.append(spec["folder"])
        sweep.Path(spec["folder"]).mkdir(parents=True)
        atomic_write_json(sweep.Path(spec["folder"]) / "metrics.json", dict(final_test_acc=0.8812))

    monkeypatch.setattr(sweep, "run_one", train)
    logged = []
    assert sweep.execute(specs, jobs=1, max_runs=2, log=logged.append) == 0
    assert trained == [specs[1]["folder"], specs[2]["folder"]]
    assert logged[0] == "1 of 4 runs already finished; 3 to go, 1 at a time, 2 now"
    assert logged[1].startswith("done no-scheduler-s0 in ") and logged[1].endswith(": final test acc 88.12 %")


def test_sweep_refuses_bad_arguments(capsys, tmp_path):
    (tmp_path / "a-file").write_text("")
    done = subprocess.run([sys.executable, "-m", "nbutils.tools.sweep", "--claims", "colour"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown ['colour']" in done.stderr
    for args, message in ((["--max-runs", "-1"], "--max-runs must be >= 0"),
                          (["--seeds", "a"], "--seeds must be comma-separated integers"),
                          (["--jobs", "0"], "--jobs must be >= 1"),
                          (["--seeds", "0,1,0"], "--seeds must not repeat a seed, got '0,1,0'"),
                          (["--precision", "fp16"], "precision must be one of ['fp32', 'tf32', 'bf16']"),
                          (["--profile", "huge"], "profile must be one of ['seed', 'smoke'], got 'huge'"),
                          (["--out", str(tmp_path / "a-file"), "--tables-only"],
                           f"--out must be a folder, and {tmp_path / 'a-file'} is a file")):
        with pytest.raises(SystemExit) as exit_:  # in process: a torch import per case costs seconds
            sweep.main(args)
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_recipe_run_is_honest_and_records_its_recipe(tmp_path):
    params = nb.as_dict(*resolve("smoke", device="cpu", train_subset=120, test_subset=100))
    spec = dict(claims.run_spec("no EMA", {"recipe": "no EMA"}, 0, params),
                folder=str(tmp_path / "runs" / "no-ema-s0"))
    metrics = sweep.run_one(spec)
    assert metrics["protocol"] == "honest" and metrics["max_test_acc"] is None
    assert metrics["recipe"]["ema_decay"] == 0.0 and metrics["recipe"]["epochs"] == 1
    assert (tmp_path / "runs" / "no-ema-s0" / "metrics.json").exists()
    with pytest.raises(ValueError, match="recipe must be one of"):
        recipe.recipe_for(nb.Run(), "more layers")


def test_recipe_spec_is_one_row_of_the_recipe_table_in_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NBUTILS_REPORTS", str(tmp_path))
    run, env = resolve("smoke", device="cpu", fast="on", seed=2)
    spec = sweep.recipe_spec(run, env, "no EMA")
    assert spec["folder"] == str(tmp_path / "recipe-smoke") and spec["protocol"] == "honest"
    assert spec["recipe"] == "no EMA" and spec["params"]["seed"] == 2
    assert spec["params"]["precision"] == "fp32" == recipe.default_precision("cpu")
    # the same computation as the sweep's row, so its key is the row's key
    row = claims.run_spec("no EMA", {"recipe": "no EMA"}, 2, nb.as_dict(run, env))
    assert claims.spec_key(spec) == claims.spec_key(row)
    assert sweep.recipe_spec(*resolve("smoke", device="cpu", run_dir=str(tmp_path / "r")))["folder"] == \
        str(tmp_path / "r")
    with pytest.raises(ValueError, match=r"ingredient must be one of \['full recipe', 'no residual'"):
        sweep.recipe_spec(run, env, "more layers")


COMMITTED = Path(__file__).resolve().parents[1] / "reports" / "ablations"


def serve_committed(monkeypatch, fail_on=None):
    """urlopen as if GitHub served the committed reports/ablations (no network in tests)."""
    asked = []

    def urlopen(url, timeout):
        asked.append(url)
        name = url.rsplit("/", 1)[1]
        if name == fail_on:
            raise urllib.error.URLError("no network")
        return io.BytesIO((COMMITTED / name).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked


def test_fetch_committed_brings_the_repositorys_tables_to_an_install_without_them(
        tmp_path, monkeypatch):
    asked = serve_committed(monkeypatch)
    report = ablations.fetch_committed(tmp_path / "abl")
    assert report == json.loads((COMMITTED / "ablations.json").read_text())
    assert ablations.load_report(tmp_path / "abl") == report
    assert asked[0] == (f"https://raw.githubusercontent.com/{nb.GITHUB_REPOSITORY}/main/reports/"
                        "ablations/ablations.json")
    assert ({p.name for p in (tmp_path / "abl").glob("*.png")}
            == {p.name for p in COMMITTED.glob("*.png")} != set())


def test_fetch_committed_without_the_json_says_so_and_leaves_no_report(tmp_path, monkeypatch,
                                                                      capsys):
    serve_committed(monkeypatch, fail_on="ablations.json")
    assert ablations.fetch_committed(tmp_path / "abl") is None
    assert "could not fetch the committed tables from https://raw.githubusercontent.com/" in \
        capsys.readouterr().out
    assert ablations.load_report(tmp_path / "abl") is None


def test_fetch_committed_shows_a_table_whose_plot_cannot_be_fetched_without_it(tmp_path,
                                                                               monkeypatch, capsys):
    serve_committed(monkeypatch, fail_on="init.png")
    report = ablations.fetch_committed(tmp_path / "abl")
    assert report == json.loads((COMMITTED / "ablations.json").read_text())
    assert "init.png could not be fetched (<urlopen error no network>)" in capsys.readouterr().out
    fetched = {p.name for p in (tmp_path / "abl").glob("*.png")}
    assert "init.png" not in fetched and "optimizer.png" in fetched
