"""Bad parameters are refused before any work, with the parameter and what is allowed."""
import os

import pytest
import torch

from nbutils import params as P
from nbutils.paths import checkout
from nbutils.data import RAW_FILES
from nbutils import estimate
from nbutils.estimate import time_training_step, warn_if_slow
from nbutils.tools import run

REPO = checkout()


@pytest.mark.parametrize("given, message", [
    (dict(epochs=0), "epochs must be >= 1, got 0"),
    (dict(batch_size=0), "batch_size must be >= 1, got 0"),
    (dict(lr=-0.001), "lr must be a finite number > 0, got -0.001"),
    (dict(lr=float("inf")), "lr must be a finite number > 0, got inf"),
    (dict(lr=float("nan")), "lr must be a finite number > 0, got nan"),
    (dict(weight_decay=float("inf")), "weight_decay must be a finite number >= 0, got inf"),
    (dict(lr="5e-4"),
     r"lr must be a number, got '5e-4' \(a string; write 0.0005: YAML reads 5e-4 as text\)"),
    (dict(lr="fast"), r"lr must be a number, got 'fast'$"),
    (dict(weight_decay=-1e-4), "weight_decay must be a finite number >= 0"),
    (dict(optimizer="rmsprop"), r"optimizer must be one of \['adam', 'sgd', 'asgd'\], got 'rmsprop'"),
    (dict(init="he"), r"init must be one of \['kaiming_uniform'"),
    (dict(patch_size=5), r"patch_size must divide 28: one of \[1, 2, 4, 7, 14, 28\], got 5"),
    (dict(train_subset=60_001), "train_subset must be 0 \\(all\\) to 60000, got 60001"),
    (dict(test_subset=-1), "test_subset must be 0 \\(all\\) to 10000, got -1"),
    (dict(epochs="ten"), "epochs must be an integer, got 'ten'"),
    (dict(lr="fast"), "lr must be a number, got 'fast'"),
    (dict(resume="maybe"), "resume must be True or False"),
    (dict(patience=-1), "patience must be >= 0, got -1"),
    (dict(precision="fp16"), r"precision must be one of \['fp32', 'tf32', 'bf16'\]"),
    (dict(fast="sometimes"), r"fast must be one of \['auto', 'on', 'eager', 'off'\]"),
    (dict(precision="bf16", fast="off"), "precision='bf16' needs the fast path"),
    (dict(device="tpu"), "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (dict(wheels=4), r"unknown parameter\(s\) \['wheels'\]"),
])
def test_bad_parameter(given, message):
    with pytest.raises(ValueError, match=message):
        P.resolve("seed", **given)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_cuda():
    with pytest.raises(ValueError, match="device='cuda' but CUDA is not available"):
        P.resolve("seed", device="cuda")


def test_unwritable_run_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="run_dir=.* is not writable"):
        P.resolve("seed", run_dir=str(blocker / "run"))
    with pytest.raises(ValueError, match="checkpoint_dir=.* is not writable"):
        P.resolve("seed", checkpoint_dir=str(blocker / "ckpt"))


def test_unknown_profile():
    with pytest.raises(ValueError, match=r"profile must be one of \['seed', 'smoke'\], got 'huge'"):
        P.resolve("huge")


def test_profiles_and_overrides(monkeypatch):
    assert P.resolve("seed") == (P.Run(), P.Env())  # the seed profile is the report's protocol
    smoke, _ = P.resolve("smoke")
    assert (smoke.epochs, smoke.train_subset, smoke.test_subset) == (1, 256, 1000)
    assert P.resolve("smoke", epochs=2)[0].epochs == 2  # a given value wins over the profile
    monkeypatch.setenv("NBUTILS_PROFILE", "smoke")
    assert P.resolve()[0].profile == "smoke" and P.resolve("seed")[0].epochs == 30


def test_a_run_is_what_it_computes_and_its_env_where_it_runs():
    run, env = P.resolve("smoke", lr=0.01, device="cpu", run_dir="", live_plot=False)
    assert (run.lr, env.device, env.live_plot) == (0.01, "cpu", False)
    assert not hasattr(run, "device") and not hasattr(env, "lr")
    assert P.from_dict(P.as_dict(run, env)) == (run, env)  # params.json round trip


@pytest.mark.parametrize("given", [dict(epochs=30), dict(epochs=30, live_plot=True),
                                   dict(test_subset=0, train_subset=0)])
def test_a_given_value_holds_whatever_the_profile(given):
    """Even a value equal to the report's default: smoke used to swallow epochs=30 (1 epoch) and
    live_plot=True (no plot)."""
    values = P.as_dict(*P.resolve("smoke", **given))
    assert {k: values[k] for k in given} == given


def test_none_takes_the_profiles_value_and_the_notebook_says_which(capsys):
    namespace = dict(profile="smoke", epochs=None, train_subset=None, lr=0.01, run_sweep=True)
    run, _ = P.from_namespace(namespace)
    assert (run.epochs, run.train_subset, run.test_subset, run.lr) == (1, 256, 1000, 0.01)
    assert capsys.readouterr().out == "profile 'smoke': epochs=1, train_subset=256 from the profile\n"
    P.from_namespace(dict(profile="seed", epochs=5))
    assert capsys.readouterr().out == "profile 'seed'\n"


def test_a_smoke_run_is_described_as_a_pipeline_check():
    assert P.describe(P.resolve("smoke")[0]).startswith("smoke profile, a pipeline check: 1 epoch on "
                                                     "256 training images (1,000 test images)")
    assert "mean nothing" in P.describe(P.resolve("smoke")[0])
    assert P.describe(P.Run()) == ("profile 'seed': 30 epochs on 60,000 training images "
                                             "(10,000 test images), adam lr 0.001, batch 128, seed 0")


def test_papermill_style_values_are_coerced():
    run_, env = P.resolve("seed", epochs=10.0, resume="false", lr=1)
    assert (run_.epochs, env.resume, run_.lr) == (10, False, 1.0)
    assert run.parse_value("ten") == "ten" and run.parse_value("10") == 10


@pytest.mark.parametrize("text", ["10", "5e-4", "0.0005", "-1", "True", "False", "None", "true",
                                  "ten", "cuda:0", "", "1_000"])
def test_runner_reads_p_values_as_papermill_does(text):
    from papermill.cli import _resolve_type  # papermill's own -p parser
    assert run.parse_value(text) == _resolve_type(text)
    assert type(run.parse_value(text)) is type(_resolve_type(text))


def test_the_runner_takes_a_given_value_whatever_the_profile(tmp_path, real_root):
    """`reproduce --profile smoke -p epochs 30` simply runs 30 smoke epochs."""
    run_, _, _, injected = run.prepare("smoke", {"epochs": 30, "lr": 5e-4}, name="s", root=tmp_path)
    assert (run_.epochs, run_.lr, run_.train_subset, run_.test_subset) == (30, 5e-4, 256, 1000)
    assert injected["epochs"] == 30


def test_runner_refuses_bad_value_before_making_a_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NBUTILS_REPORTS", str(tmp_path))
    assert run.main(["--profile", "smoke", "-p", "epochs", "ten", "--name", "bad"]) == 2
    assert "epochs must be an integer, got 'ten'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_runner_refuses_an_unknown_parameter_name(tmp_path, monkeypatch, capsys):
    # A typo must not fall back to the report's 30 epochs: papermill would inject `epoch` unused.
    monkeypatch.setenv("NBUTILS_REPORTS", str(tmp_path))
    assert run.main(["--profile", "smoke", "-p", "epoch", "5", "--name", "typo"]) == 2
    assert "unknown parameter(s) ['epoch']; allowed: ['batch_size'" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()


def test_runner_takes_the_profile_from_p_as_papermill_would(tmp_path, real_root):
    run_, _, folder, injected = run.prepare(overrides={"profile": "smoke", "epochs": 2}, name="p",
                                            root=tmp_path)
    assert (run_.profile, run_.epochs, run_.train_subset) == ("smoke", 2, 256)
    assert injected["profile"] == "smoke" and folder == tmp_path / "p"
    with pytest.raises(ValueError, match="profile is given twice: --profile seed and -p profile smoke"):
        run.prepare("seed", {"profile": "smoke"}, name="q", root=tmp_path)
    assert not (tmp_path / "q").exists()


def test_full_size_training_on_a_cpu_is_announced_in_hours(capsys):
    # 0.5 s a step: 469 training steps and a test pass of 10,000 / 128 / 3 step-equivalents an epoch
    warn_if_slow(P.Run(), "cpu", runs=2, step_seconds=0.5)
    out = capsys.readouterr().out
    assert "2 full-size runs of 30 epochs: about 4.1 h on this CPU (a training step took 0.50 s" in out
    assert "`python3 -m nbutils reproduce --profile smoke`" in out
    warn_if_slow(P.Run(batch_size=256), "cpu", step_seconds=1.0)
    assert "1 full-size run of 30 epochs: about 2.1 h" in capsys.readouterr().out  # 248 steps
    for quiet in (P.resolve("smoke")[0], P.Run(train_subset=500)):
        warn_if_slow(quiet, "cpu")
    warn_if_slow(P.Run(), "cpu", runs=0)
    warn_if_slow(P.Run(), "cpu", epochs=0)  # a resumed run with nothing left
    assert capsys.readouterr().out == ""
    warn_if_slow(P.Run(), "cpu", epochs=12, step_seconds=0.5)  # 18 done
    assert "1 full-size run of 12 epochs: about 0.8 h" in capsys.readouterr().out


def test_bf16_is_offered_with_its_own_measured_step_where_the_cpu_has_it_and_never_chosen(capsys,
                                                                                         monkeypatch):
    params = P.Run()
    warn_if_slow(params, "cpu", step_seconds=0.5, bf16_seconds=0.2)  # 2.05 h in fp32
    out = capsys.readouterr().out
    assert ('This CPU has bf16 instructions: precision="bf16" (with fast="on") took 0.20 s a step, '
            "about 0.8 h;") in out and params.precision == "fp32"
    monkeypatch.setattr(estimate, "bf16_emulated", lambda: True)  # no bf16 instructions: no offer
    warn_if_slow(params, "cpu", step_seconds=0.5)
    warn_if_slow(P.Run(precision="bf16"), "cpu", step_seconds=0.2)
    assert "This CPU has bf16" not in capsys.readouterr().out


def test_the_cpu_estimate_times_a_real_step_and_leaves_the_random_state_alone(capsys):
    params = P.Run()
    state = torch.random.get_rng_state()
    seconds = time_training_step(params, repeats=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert 0 < seconds < 60
    warn_if_slow(params, "cpu")
    step = float(capsys.readouterr().out.split("a training step took ")[1].split(" s")[0])
    assert 0 < step < 60


def test_runner_refuses_a_corrupt_dataset_before_making_a_folder(tmp_path):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in RAW_FILES:
        (raw / name).write_bytes(b"not an idx file")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte: not an IDX images file"):
        run.prepare("smoke", {"data_root": str(tmp_path / "data")}, name="r", root=tmp_path)
    assert not (tmp_path / "r").exists()


def test_runner_resolves_relative_paths_from_the_repository_root(tmp_path, real_root, monkeypatch):
    # The notebooks run inside the run folder, where a relative path would name another folder.
    monkeypatch.chdir(tmp_path)  # and the current directory must not matter either
    relative = os.path.relpath(real_root, REPO)
    _, env, _, injected = run.prepare("smoke", {"data_root": relative, "checkpoint_dir": "ck"},
                                      name="r", root=tmp_path / "reports")
    assert env.data_root == injected["data_root"] == str(real_root.resolve())
    assert env.checkpoint_dir == str(REPO / "ck") and not (REPO / "ck").exists()
