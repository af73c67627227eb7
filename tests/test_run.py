"""The papermill runner, run folders and the results table."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import torch

import nbutils as nb
from nbutils import coursework, runs, trained
from nbutils.coursework import train_run
from nbutils.params import resolve
from nbutils.tools import results, run, sweep
from test_browser import CLUTTER


@pytest.fixture
def reports(tmp_path, monkeypatch):
    monkeypatch.setenv("NBUTILS_REPORTS", str(tmp_path / "reports"))
    return tmp_path / "reports"


def test_smoke_profile_end_to_end(reports, capfd):
    assert run.main(["--profile", "smoke", "--name", "smoke-e2e"]) == 0
    terminal = capfd.readouterr().out
    folder = reports / "smoke-e2e"
    assert sorted(p.name for p in folder.glob("*.ipynb")) == [p.name for p in run.notebooks()]
    for nb_path in folder.glob("*.ipynb"):  # executed copies, with outputs, and nothing stray
        cells = nbformat.read(nb_path, 4).cells
        assert any(c.get("outputs") for c in cells if c.cell_type == "code")
        outputs = [o for c in cells for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.output_type == "error"], nb_path.name
        assert not [o for o in outputs if o.output_type == "execute_result"
                    and CLUTTER.match("".join(o.data.get("text/plain", "")))], nb_path.name
        (injected,) = [c for c in cells if "injected-parameters" in c.metadata.get("tags", [])]
        names = {line.split(" = ")[0] for line in injected.source.splitlines() if " = " in line}
        assert "profile" in names and names <= run.declared_parameters(nb_path), nb_path.name
    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "finished"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["params"]["profile"] == "smoke" and metrics["params"]["train_subset"] == 256
    assert metrics["summary"].startswith("smoke profile, a pipeline check")
    assert metrics["environment"]["torch"] and metrics["environment"]["device_name"]
    assert 0 < metrics["final_test_acc"] <= 1 and metrics["epochs_run"] == 1
    assert (folder / "history.csv").read_text().splitlines()[0] == \
        "epoch,train_loss,train_acc,test_loss,test_acc,lr,seconds"
    for fig in ("samples", "patches", "inits", "training", "confusion", "misclassified"):
        assert (folder / "figures" / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"
    # Without a frontend (papermill, nothing set in the environment) each notebook reads right as a
    # file: a browse cell stores its one static view as PNG, training one text line per epoch.
    for name in ("01_data.ipynb", "05_evaluation.ipynb"):
        (browse,) = [c for c in nbformat.read(folder / name, 4).cells if "nbutils.browse(" in c.source]
        kinds = [kind for o in browse.outputs for kind in o.get("data", {})]
        assert "image/png" in kinds and not [k for k in kinds if "widget" in k], (name, kinds)
    (training,) = [c for c in nbformat.read(folder / "04_training.ipynb", 4).cells
                   if "net, history = train_run(" in c.source]
    text = "".join(o.get("text", "") for o in training.outputs)
    assert text.startswith("epoch 1/1: train loss ") and text.count("\n") == 1, text
    # The terminal follows the run: each notebook's name, then what it prints, epochs included.
    assert f"[smoke-e2e] 04_training.ipynb\n" in terminal
    assert "\n    epoch 1/1: train loss " in terminal
    table = (reports / "RESULTS.md").read_text()
    assert "| smoke-e2e | finished | 1 | 128 |" in table
    with pytest.raises(ValueError, match="holds a finished run"):
        run.prepare("smoke", name="smoke-e2e")


def test_a_full_size_cpu_run_is_announced_in_the_terminal_before_it_starts(reports, real_root,
                                                                         monkeypatch, capsys):
    monkeypatch.setattr(run, "execute", lambda *a: print("notebooks run") or True)
    assert run.main(["--profile", "seed", "-p", "device", "cpu", "--name", "long"]) == 0
    out = capsys.readouterr().out
    announced = re.search(r"30 epochs: about [\d.]+ h on this CPU \(a training step took [\d.]+ s here\)", out)
    assert announced and announced.start() < out.index("notebooks run")
    assert "`python3 -m nbutils reproduce --profile smoke`" in out


def test_notebook_04_trains_what_its_saved_train_run_trains_and_a_given_epochs_holds(tmp_path):
    """papermill 04 -p profile smoke -p epochs 30: 30 epochs (30 is the report's value, and smoke's is
    1), the very history that coursework.train_run, exported from 04 and run by notebook 05 alone,
    gives outside the notebook."""
    # One small batch an epoch, on the fast path (no DataLoader workers to start every epoch).
    given = dict(epochs=30, train_subset=32, test_subset=32, fast="on")
    pm.execute_notebook(str(run.notebooks_dir() / "04_training.ipynb"), str(tmp_path / "04.ipynb"),
                        parameters=dict(given, profile="smoke", run_dir=str(tmp_path / "nb")),
                        kernel_name="python3", progress_bar=False)
    history = json.loads((tmp_path / "nb" / "history.json").read_text())
    assert len(history) == 30
    _, expected = train_run(*resolve("smoke", **given), tmp_path / "module")
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in history] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in expected]


def test_metrics_carry_the_parameters_of_the_model_they_measure(tmp_path, real_root):
    """Notebook 05 with another profile than 04's used to write its own parameters beside 04's
    epochs_run: now the trained model's parameters go with it, and the notebook says so."""
    folder = tmp_path / "run"
    given, env = resolve("smoke", epochs=3, train_subset=64, test_subset=100, run_dir=str(folder))
    net, history = train_run(given, env, folder)
    runs.save_run(folder, net, history, given, env)
    said = []
    _, loaded, used, where = trained.load_or_train(*resolve("smoke", run_dir=str(folder)), folder,
                                                  log=said.append)
    assert (used, where, len(loaded)) == (given, folder, 3)
    assert said == [f"The model notebook 04 trained in {folder}, with its own parameters (params.json)."]
    metrics = trained.write_metrics(folder, loaded)
    assert metrics["epochs_run"] == metrics["params"]["epochs"] == 3
    assert metrics["params"]["train_subset"] == 64
    identity = runs.run_identity(given, env, net)
    assert metrics["code"] == {k: identity[k] for k in ("code", "model", "model_code")}
    # A model.pt of other code (notebook 02 edited since) is refused, never evaluated as this code's.
    saved = torch.load(folder / "model.pt", weights_only=False)
    saved["identity"]["listing"] = saved["identity"]["listing"].replace("Dropout(p=0.2", "Dropout(p=0.5")
    torch.save(saved, folder / "model.pt")
    with pytest.raises(nb.CheckpointMismatch, match=r"model.pt was trained by other code \(the "
                                                     r"model's listing: .*run notebook 04 again"):
        trained.load_or_train(*resolve("smoke", run_dir=str(folder)), folder)


def test_05_loads_the_class_04_trained_even_one_pasted_into_both(tmp_path, monkeypatch):
    """In Colab an edited class is pasted into 04 and 05: 05 loads 04's model.pt with its own copy,
    and refuses it with notebook 02's class."""
    class NeuralNetwork(nb.NeuralNetwork):  # a pasted copy: another class, the same layers
        pass

    folder = tmp_path / "run"
    given, env = resolve("smoke", epochs=1, train_subset=64, test_subset=100, run_dir=str(folder))
    monkeypatch.setattr(coursework, "NeuralNetwork", NeuralNetwork)  # 04's kernel: the pasted class
    net, history = train_run(given, env, folder)
    runs.save_run(folder, net, history, given, env)
    monkeypatch.undo()
    loaded, _, used = trained.load_trained(folder, "cpu", NeuralNetwork)
    assert type(loaded) is NeuralNetwork and used == given
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 net.state_dict().values()))
    with pytest.raises(nb.CheckpointMismatch, match=r"paste the class that 04 trained into this "
                                                     r"notebook too"):
        trained.load_trained(folder, "cpu")  # notebook 02's class


@pytest.mark.parametrize("name", ["../outside", "a/b", ".hidden", "..", "a\\b"])
def test_a_name_that_is_not_one_folder_is_refused_before_any_folder_is_made(reports, name, capsys):
    assert run.main(["--profile", "smoke", "--name", name]) == 2
    assert f"error: --name must be one folder name, without '/', '\\' or a leading '.', got {name!r}" \
        in capsys.readouterr().err
    assert not reports.exists() and sorted(p.name for p in reports.parent.iterdir()) == []


@pytest.mark.parametrize("text, message", [
    (None, "parameters file {path}: No such file or directory"),
    ("- 1\n", "parameters file {path} must map parameter names to values (`epochs: 10`), got a list"),
    ("epochs: [\n", "parameters file {path} is not valid YAML: "),
    ("epoch: 5\n", "unknown parameter(s) ['epoch']"),  # read, then refused as -p epoch 5 is
])
def test_a_bad_parameters_file_is_named_before_any_folder_is_made(reports, tmp_path, text, message,
                                                                   capsys):
    path = tmp_path / "params.yaml"
    if text is not None:
        path.write_text(text)
    assert run.main(["--profile", "smoke", "-f", str(path)]) == 2
    assert message.format(path=path) in capsys.readouterr().err
    assert not reports.exists()


def _fake_notebooks(folder, failing):
    folder.mkdir()
    for i in range(1, 6):
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell("profile = ''\nrun_dir = ''", metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell(f"raise RuntimeError('cell {i} broke')" if i == failing
                                              else "print('ok')")]
        nbformat.write(nb, folder / f"0{i}_step.ipynb")


def test_failed_cell_stops_the_run_and_marks_it_failed(reports, tmp_path, monkeypatch, capfd):
    _fake_notebooks(tmp_path / "nbs", failing=3)
    monkeypatch.setattr(run, "notebooks_dir", lambda: tmp_path / "nbs")
    assert run.main(["--profile", "smoke", "--name", "broken"]) == 1
    out, err = capfd.readouterr()  # the terminal: what the run says, without the kernels' warnings
    assert "FAILED in 03_step.ipynb: " in out and "WARNING" not in err
    folder = reports / "broken"
    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "failed" and status["notebook"] == "03_step.ipynb"
    assert "cell 3 broke" in status["error"]
    assert (folder / "03_step.ipynb").exists() and not (folder / "04_step.ipynb").exists()
    failed_nb = (folder / "03_step.ipynb").read_text()
    assert "papermill-error-cell" in failed_nb or "An Exception was encountered" in failed_nb
    assert "| broken | failed |" in (reports / "RESULTS.md").read_text()


def test_results_table_flags_interrupted_and_skips_empty(reports):
    dead = reports / "killed"
    dead.mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True)
    (dead / "status.json").write_text(json.dumps({"state": "running", "pid": int(proc.stdout)}))
    (reports / "empty").mkdir()
    rows = results.collect(reports)
    assert rows == [{"run": "killed", "status": "interrupted"}]
    assert results.run_state(reports / "empty") == "interactive"
    (dead / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid()}))
    assert results.run_state(dead) == "running"


def test_results_table_names_the_settings_without_a_column_that_differ_from_the_report(reports):
    def finished_run(name, **changed):
        folder = reports / name
        folder.mkdir(parents=True)
        params = dict(nb.as_dict(nb.Run(), nb.Env()), **changed, run_dir=str(folder))
        metrics = dict(params=params, epochs_run=params["epochs"], final_test_acc=0.5,
                       max_test_acc=0.6, max_epoch=1, train_seconds=1.0,
                       environment={"device_name": "cpu"})
        (folder / "metrics.json").write_text(json.dumps(metrics))

    finished_run("a-report", device="cpu", live_plot=False)  # neither trains differently
    finished_run("b-other", seed=1, patch_size=7, precision="bf16", epochs=2)
    rows = {r["run"]: r for r in results.collect(reports)}
    assert rows["a-report"]["other settings"] == "–"
    assert rows["b-other"]["other settings"] == "seed 1, patch_size 7, precision bf16"
    assert rows["b-other"]["epochs"] == 2  # in a column of its own, so not repeated
    assert "| full | seed 1, patch_size 7, precision bf16 | cpu |" in \
        results.write_results_table(reports).read_text()


def test_results_table_lists_a_recipe_run_with_its_own_settings(reports):
    """Notebook 07's run folder: the recipe's batch, lr and optimizer, and no max (one test)."""
    run_, env = resolve("smoke", device="cpu", fast="on", train_subset=120, test_subset=100)
    sweep.run_one(sweep.recipe_spec(run_, env, "no EMA"))
    (row,) = results.collect(reports)
    assert row["run"] == "recipe-smoke" and row["status"] == "interactive"
    assert (row["batch"], row["optimizer"], row["init"]) == (256, "adamw", "recipe: no EMA")
    assert row["max test acc (epoch)"] == "– (one test)" and row["final test acc"].endswith(" %")
    assert "| recipe-smoke | interactive |" in results.write_results_table(reports).read_text()


def test_papermill_wrong_type_stops_at_the_validation_cell(tmp_path):
    """`papermill ... -p epochs ten`: the cell after the parameters names the parameter."""
    out = tmp_path / "out.ipynb"
    with pytest.raises(pm.PapermillExecutionError, match="epochs must be an integer, got 'ten'"):
        pm.execute_notebook(str(run.notebooks_dir() / "04_training.ipynb"), str(out),
                            parameters={"epochs": "ten", "run_dir": str(tmp_path / "run")},
                            kernel_name="python3", progress_bar=False)
    assert not (tmp_path / "run").exists()  # failed before the run folder was made


def test_notebook_05_alone_on_a_cpu_explains_and_trains_a_smoke_model(tmp_path):
    said = []
    net, history, used, folder = trained.load_or_train(
        *resolve("smoke", device="cpu", run_dir=str(tmp_path / "fresh")), tmp_path / "fresh",
        log=said.append)
    assert "No trained model in" in said[0] and "Run notebook 04 first" in said[0]
    assert folder == tmp_path / "fresh" / "smoke-fallback" and used.profile == "smoke"
    assert (folder / "model.pt").exists() and len(history) == 1
    assert not (tmp_path / "fresh" / "model.pt").exists()  # the fallback never poses as the run


def test_notebook_05_alone_on_a_gpu_trains_the_run_itself(tmp_path, monkeypatch):
    """Where the real protocol costs seconds, the notebook evaluates the real model, not a smoke one."""
    params, env = resolve("seed", run_dir=str(tmp_path / "run"))
    monkeypatch.setattr(trained, "resolve_device", lambda device: torch.device("cuda"))
    ran, saved = [], []
    monkeypatch.setattr(trained, "train_run",
                        lambda p, e, folder, animator: ran.append((p, folder)) or ("net", []))
    monkeypatch.setattr(trained, "save_run",
                        lambda folder, net, history, p, e: saved.append((folder, p)))
    said = []
    assert (trained.load_or_train(params, env, tmp_path / "run", log=said.append)
            == ("net", [], params, tmp_path / "run"))
    assert ran == [(params, tmp_path / "run")] and saved == [(tmp_path / "run", params)]
    assert said == [f"No trained model in {tmp_path / 'run'}: training it now, as notebook 04 would "
                    "(seconds on a GPU)."]


def test_metrics_name_the_cpu_model_with_its_cores_and_threads():
    """A CPU time means little without the CPU: run metrics name it as the benchmark does."""
    name = runs.environment("cpu")["device_name"]
    assert name == runs.hardware("cpu")
    assert re.search(rf" CPU, {os.cpu_count()} cores?, {torch.get_num_threads()} threads?$", name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert runs.hardware("cpu").endswith(", 1 thread")  # not "1 threads"
    finally:
        torch.set_num_threads(threads)
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in
              (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
              if line.startswith("model name")]
    if models:
        assert name.startswith(models[0])
