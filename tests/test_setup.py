"""The commands' setup step: pip runs only when something is missing."""
import json
import sys

import pytest

from nbutils import __main__ as commands
from nbutils.tools import results


@pytest.mark.parametrize("text, met", [
    ("# comment only\n\npytest>=1  # with a comment\n", True),
    ("pytest>=1\npytest<1\n", False),                                  # installed, version refused
    ("nbutils-no-such-package>=1\n", False),                           # not installed
    ("pytest<1; python_version < '3'\n", True),                         # marker false: not needed here
    ("this is not a requirement\n", False),                            # unparsable: pip decides
])
def test_requirements_met_reads_versions_and_markers(tmp_path, text, met):
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    assert commands.requirements_met(path) is met


def test_the_repository_requirements_are_met_where_the_suite_runs():
    # The suite runs after setup installed them, so a False here means the check itself is wrong and
    # every command would pay for pip again.
    assert commands.requirements_met()


def _dist_info(site, url, editable=True):
    info = site / "nbutils-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nbutils\nVersion: 0.1.0\n")
    if url is not None:
        (info / "direct_url.json").write_text(
            json.dumps({"url": url, "dir_info": {"editable": editable}}))


@pytest.mark.parametrize("url, editable, here", [
    ("checkout", True, True),
    ("elsewhere", True, False),    # another clone's editable install: reinstall from this one
    ("checkout", False, False),    # a copy, not the checkout: edits would not reach the kernels
    (None, True, False),           # installed from an index: no direct_url.json
])
def test_installed_here_wants_an_editable_install_of_this_checkout(tmp_path, monkeypatch, url,
                                                                    editable, here):
    checkout, site = tmp_path / "checkout", tmp_path / "site"
    (checkout / "nbutils.egg-info").mkdir(parents=True)  # what setuptools leaves in a checkout
    (checkout / "nbutils.egg-info" / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: nbutils\n"
                                                            "Version: 0.1.0\n")
    _dist_info(site, None if url is None else (tmp_path / url).as_uri(), editable)
    monkeypatch.setattr(commands, "REPO", checkout)
    monkeypatch.setattr(sys, "path", [str(checkout), str(site)])
    assert commands.installed_here() is here


def test_installed_here_is_false_without_any_install(tmp_path, monkeypatch):
    monkeypatch.setattr(commands, "REPO", tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "empty")])
    assert commands.installed_here() is False


def test_setup_skips_pip_when_nothing_is_missing(monkeypatch):
    ran = []
    monkeypatch.setattr(commands, "_run", lambda cmd, **kw: ran.append(cmd))
    monkeypatch.setattr(commands, "ensure_dataset", lambda: None)
    monkeypatch.setattr(commands, "requirements_met", lambda: True)
    monkeypatch.setattr(commands, "installed_here", lambda: True)
    commands.setup()
    assert ran == []
    monkeypatch.setattr(commands, "installed_here", lambda: False)
    commands.setup()
    assert ran == [[sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e",
                    str(commands.REPO)]]


def test_an_unknown_command_is_named_before_any_setup(monkeypatch, capsys):
    monkeypatch.setattr(commands, "setup", lambda: pytest.fail("set up for a command that is not one"))
    assert commands.main(["reprodcue"]) == 2
    out, err = capsys.readouterr()
    assert "python3 -m nbutils reproduce" in out  # the usage
    assert err.strip() == ("error: unknown command 'reprodcue'; one of reproduce, test, export, bench, "
                           "sweep, results, setup")
    assert commands.main(["--help"]) == 0 and capsys.readouterr().err == ""


def test_a_commands_help_installs_what_is_missing_but_skips_the_data(monkeypatch):
    calls = []
    monkeypatch.setattr(commands, "setup", lambda data=True: calls.append(data))
    monkeypatch.setattr(commands, "_exec_module", lambda module, args, **env: calls.append(args))
    commands.main(["bench", "--help"])
    commands.main(["bench", "--device", "cpu"])
    assert calls == [False, ["--help"], True, ["--device", "cpu"]]


def test_export_needs_no_setup_and_test_brings_the_browser(monkeypatch):
    calls = []
    monkeypatch.setattr(commands, "setup", lambda data=True: calls.append("setup"))
    monkeypatch.setattr(commands, "ensure_browser", lambda: calls.append("browser"))
    monkeypatch.setattr(commands, "_exec_module", lambda module, args, **env: calls.append(module))
    commands.main(["export", "--check"])
    commands.main(["test", "-m", "browser"])
    assert calls == ["nbutils.tools.export", "setup", "browser", "pytest"]


def test_the_suite_runs_a_worker_per_core_unless_told_otherwise(monkeypatch):
    monkeypatch.setattr(commands.os, "cpu_count", lambda: 2)
    if commands.importlib.util.find_spec("xdist") is None:
        assert commands.parallel([]) == []
        return
    assert commands.parallel(["-m", "browser"]) == ["-n", "2", "--dist", "loadfile"]
    assert commands.parallel(["-n", "0"]) == [] and commands.parallel(["--numprocesses=3"]) == []


def test_results_command_has_help_and_refuses_a_missing_root(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        results.main(["--help"])
    assert exit_.value.code == 0 and "rewrite reports/RESULTS.md" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        results.main(["--root", str(tmp_path / "none")])
    assert exit_.value.code == 2 and f"--root: no folder {tmp_path / 'none'}" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    results.main(["--root", str(tmp_path)])
    assert capsys.readouterr().out.strip() == str(tmp_path / "RESULTS.md")


def test_without_a_checkout_test_says_in_one_line_what_to_do(monkeypatch, capsys):
    monkeypatch.setattr(commands, "REPO", None)  # an installed package (pip, Colab)
    assert commands.main(["test"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "clone the repository" in err


def test_without_a_checkout_setup_fetches_only_the_data(monkeypatch):
    monkeypatch.setattr(commands, "REPO", None)
    done = []
    monkeypatch.setattr(commands, "ensure_dataset", lambda: done.append("data"))
    monkeypatch.setattr(commands, "_run", lambda cmd, **kw: pytest.fail(f"ran {cmd}"))
    commands.setup()
    assert done == ["data"]
