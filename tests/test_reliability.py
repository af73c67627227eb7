"""Checkpoints, exact resume after SIGKILL, refusals, divergence, atomic writes, repeatability."""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import nbutils as nb
from nbutils import coursework, io, runs, trained
from nbutils.coursework import train_run
from nbutils.checkpoint import (Checkpoint, CheckpointMismatch, load_optimizer_in_place, model_identity,
                                random_states, set_random_states)
from nbutils.params import resolve

TRAIN = dict(epochs=3, train_subset=256, test_subset=100, batch_size=64, live_plot=False)


def params_for(folder, **kw):
    return resolve("smoke", run_dir=str(folder), **dict(TRAIN, **kw))


def train(params):
    """Notebook 04's training and what it writes: a checkpoint every epoch, then the run's files."""
    run, env = params
    folder = runs.run_folder(run, env)
    net, history = train_run(run, env, folder)
    runs.save_run(folder, net, history, run, env)
    return net, history, folder


def train_in_subprocess(folder, **kw):
    """Start a real training process (the thing a Colab disconnect kills)."""
    code = textwrap.dedent(f"""
        from nbutils.params import resolve
        from test_reliability import train
        train(resolve("smoke", run_dir={str(folder)!r}, **{dict(TRAIN, **kw)!r}))
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent,
                            env=dict(os.environ, NBUTILS_HEADLESS="1"))


def strip_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


@pytest.fixture(scope="module")
def uninterrupted(real_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    proc = train_in_subprocess(folder)
    assert proc.wait(timeout=300) == 0
    return folder


def final_state(folder):
    net, history, _ = trained.load_trained(folder, "cpu")
    return net.state_dict(), strip_seconds(history)


def test_checkpoint_holds_everything(uninterrupted):
    state = torch.load(uninterrupted / "checkpoint.pt", weights_only=False)
    assert set(state) == {"model", "optimizer", "scheduler", "history", "params", "rng", "loader_rng",
                          "trainer"}
    assert state["trainer"] is None  # a single run's trainer keeps no state of its own
    assert len(state["history"]) == 3 and state["params"]["epochs"] == 3
    assert "torch" in state["rng"] and state["loader_rng"] is not None
    assert not [p for p in uninterrupted.iterdir() if p.name.endswith(".tmp")]


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(uninterrupted, tmp_path):
    folder = tmp_path / "killed"
    proc = train_in_subprocess(folder)
    deadline = time.monotonic() + 300
    while not (folder / "checkpoint.pt").exists():  # epoch 1 done: now in the middle of epoch 2
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(torch.load(folder / "checkpoint.pt", weights_only=False)["history"])
    assert 1 <= done < 3 and not (folder / "model.pt").exists()

    proc = train_in_subprocess(folder)  # the same parameters: resumes
    assert proc.wait(timeout=300) == 0
    weights, history = final_state(folder)
    ref_weights, ref_history = final_state(uninterrupted)
    assert history == ref_history
    for k in ref_weights:
        assert torch.equal(weights[k], ref_weights[k]), k


def test_a_run_of_other_parameters_is_not_resumed_but_moved_to_previous(uninterrupted, tmp_path,
                                                                       capsys):
    folder = tmp_path / "run"
    shutil.copytree(uninterrupted, folder)
    _, history, _ = train(params_for(folder, lr=0.01, epochs=1))
    out = capsys.readouterr().out
    assert (f"Not resuming: {folder} holds a run of other code or parameters (epochs: saved 3, now 1, "
            f"lr: saved 0.001, now 0.01)") in out and "starts from epoch 1" in out
    assert "resuming from" not in out and len(history) == 1
    (previous,) = (folder / "previous").iterdir()
    assert len(json.loads((previous / "history.json").read_text())) == 3
    assert (previous / "checkpoint.pt").exists() and (previous / "model.pt").exists()


def test_a_checkpoint_of_other_code_or_parameters_is_refused(uninterrupted):
    saved = torch.load(uninterrupted / "checkpoint.pt", weights_only=False)["params"]
    with pytest.raises(CheckpointMismatch, match=r"other code or parameters \(lr: saved 0.001, now 0.01\)"):
        Checkpoint(uninterrupted / "checkpoint.pt", dict(saved, lr=0.01)).load()
    listing = saved["listing"].replace("Dropout(p=0.2", "Dropout(p=0.3")
    with pytest.raises(CheckpointMismatch, match=re.escape(
            "the model's listing: '(Block2_Dropout): Dropout(p=0.2, inplace=False)' became "
            "'(Block2_Dropout): Dropout(p=0.3, inplace=False)')")):
        Checkpoint(uninterrupted / "checkpoint.pt", dict(saved, listing=listing)).load()


def test_a_checkpoint_records_the_loop_that_ran_and_the_other_loop_never_continues_it(uninterrupted):
    net = nb.NeuralNetwork()
    ran = {fast: runs.run_identity(*resolve("smoke", device="cpu", fast=fast), net)["fast"]
           for fast in ("auto", "on", "eager", "off")}
    assert ran == {"auto": False, "on": True, "eager": True, "off": False}  # "auto" on a CPU: my_utils'
    saved = torch.load(uninterrupted / "checkpoint.pt", weights_only=False)["params"]
    with pytest.raises(CheckpointMismatch, match=r"\(the training loop: saved my_utils' loop, now the fast "
                                                 r"path\)"):
        Checkpoint(uninterrupted / "checkpoint.pt", dict(saved, fast=True)).load()


def test_a_checkpoint_from_before_checkpoints_recorded_the_code_is_refused(uninterrupted, tmp_path):
    state = torch.load(uninterrupted / "checkpoint.pt", weights_only=False)
    ours = state["params"]
    state["params"] = {k: v for k, v in ours.items() if k not in model_identity(nn.Linear(1, 1))}
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointMismatch, match="it records no model code"):
        Checkpoint(tmp_path / "checkpoint.pt", ours).load()


def test_unreadable_checkpoint_is_refused(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"half a file")
    with pytest.raises(CheckpointMismatch, match="not a readable checkpoint"):
        Checkpoint(tmp_path / "checkpoint.pt", {}).load()
    assert Checkpoint(tmp_path / "checkpoint.pt", {}, resume=False).load() is None


def test_resume_false_starts_over_and_keeps_old_results(real_root, tmp_path):
    folder = tmp_path / "run"
    train(params_for(folder, epochs=1))
    old_history = (folder / "history.json").read_text()
    net, history, _ = train(params_for(folder, epochs=1, resume=False, seed=1))
    archived = list((folder / "previous").glob("*/history.json"))
    assert len(archived) == 1 and archived[0].read_text() == old_history
    assert (archived[0].parent / "checkpoint.pt").exists()
    assert len(history) == 1


def test_checkpoint_dir_parameter(real_root, tmp_path):
    train(params_for(tmp_path / "run", epochs=1, checkpoint_dir=str(tmp_path / "drive")))
    assert (tmp_path / "drive" / "checkpoint.pt").exists()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_divergence_names_epoch_batch_and_cause_and_keeps_last_good_checkpoint(real_root, tmp_path,
                                                                             monkeypatch):
    real_build = coursework.build
    calls = {"n": 0}

    def poisoned_build(params, device):
        net, loss, opt, sched = real_build(params, device)

        def loss_fn(y_hat, y):
            calls["n"] += 1
            value = loss(y_hat, y)
            return value * float("nan") if calls["n"] == 9 else value  # 4 train + 2 test per epoch
        return net, loss_fn, opt, sched

    monkeypatch.setattr(coursework, "build", poisoned_build)  # what train_run builds
    folder = tmp_path / "diverged"
    with pytest.raises(nb.TrainingDiverged, match=r"epoch 2: .*batch 2; the learning rate"):
        train(params_for(folder, epochs=3))
    kept = torch.load(folder / "checkpoint.pt", weights_only=False)
    assert [r["epoch"] for r in kept["history"]] == [1]


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    io.atomic_write_json(target, {"final": 0.9})

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(io.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        io.atomic_write_json(target, {"final": 0.1})
    assert json.loads(target.read_text()) == {"final": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_writes_use_no_call_that_windows_lacks(tmp_path, monkeypatch):
    # Windows has no os.fchmod before Python 3.13; every save (figures, data, model, params) writes here.
    monkeypatch.delattr(io.os, "fchmod", raising=False)
    monkeypatch.delattr(io.os, "fchown", raising=False)
    io.atomic_write_text(tmp_path / "params.json", "{}\n")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "params.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    net = nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters())
    checkpoint = Checkpoint(tmp_path / "c.pt", {"lr": 1})
    checkpoint.save(net, opt, None, [{"epoch": 1}], None)
    monkeypatch.setattr(io.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        checkpoint.save(net, opt, None, [{"epoch": 1}, {"epoch": 2}], None)
    assert len(checkpoint.load()["history"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_a_resume_keeps_what_the_fast_path_made_of_the_live_optimizer():
    """A run saved without CUDA graphs (on a CPU) and resumed with them (on a GPU): the live optimizer
    keeps its capture settings and its tensor lr, the one a graph reads, and takes the saved lr,
    moments and step count."""
    net = nn.Linear(3, 2)
    saved_optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.ones(4, 3)).sum().backward()
    saved_optimizer.step()
    lr = torch.tensor(5e-4)
    live = torch.optim.Adam(net.parameters(), lr=lr, capturable=True, foreach=False)
    load_optimizer_in_place(live, saved_optimizer.state_dict())
    group = live.param_groups[0]
    assert (group["capturable"], group["foreach"]) == (True, False)
    assert group["lr"] is lr and float(lr) == pytest.approx(1e-3)
    for name in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(live.state[net.weight][name], saved_optimizer.state[net.weight][name])


def test_random_states_put_back_give_the_same_draws_from_torch_python_and_numpy():
    saved = random_states()
    first = (torch.rand(3).tolist(), random.random(), np.random.rand())
    set_random_states(saved)
    assert (torch.rand(3).tolist(), random.random(), np.random.rand()) == first
