"""Colab's own stack, left as it is (issue 26, item 1).

An environment holding Colab's versions of the packages in Google's published list
(``shared/reference/colab-runtime.md``: googlecolab/backend-info's ``pip-freeze.gpu.txt``), the bundle
installed into it exactly as the notebooks' setup cell installs it, ``pip freeze`` compared before and
after, and notebooks 01-05 run there with papermill from a folder outside the checkout.

How the environment is built, and why it is a fair stand-in for Colab:

- A venv *without* the system site-packages. ``--system-site-packages`` would let this machine's
  ipywidgets 8, JupyterLab 4, papermill, nbval and above all the checkout's editable nbutils (a
  ``.pth`` finder in the system site-packages) leak into the environment, and pip would count them
  as installed: the very changes this test looks for would be masked.
- Colab's torch is the CUDA build 2.11.0+cu128, which pip cannot install here; this machine's torch
  and torchvision stand in. They are not reinstalled (5 GB): each file of their distributions, and of
  the distributions they require (the closure of ``Requires-Dist``, extras and markers evaluated:
  filelock, sympy, networkx, jinja2, triton, the nvidia-* libraries, ...), is hard-linked into the
  venv's site-packages from its RECORD, dist-info included, so that pip and importlib see ordinary
  installed distributions in the environment itself, as in Colab. Hard links (a symlink where the
  file system refuses one) never let the environment change the system's copy: pip removes and
  writes files, it never rewrites one in place. numpy and pillow, which torchvision requires, are
  Colab's versions from the table, not the system's.
- pip is Colab's 24.1.2 (a version of backend-info's pip-freeze.gpu.txt lists it; the table has no
  pip row), installed
  into the venv by this machine's pip. (ensurepip's pip 23.2.1 could not even parse the setup cell's
  line with a ``git+file:///`` URL: its packaging 21.3 wants a host in a ``git+file`` URL.)
- setuptools is this machine's, linked like torch: Colab's 75.2.0 (and ensurepip's 65.5) would not
  satisfy the stand-in torch's ``setuptools>=77.0.3``, and a stack in which torch's own requirements
  fail would make pip "repair" it on the first install that names torch, which Colab's never needs.
- Then the table's packages, pinned, in one pip call (the rest of their dependencies resolve to what
  pip picks for them: Colab's list has versions for them too, but the table is what this bundle
  touches).

Every version in the table installs on this machine's Python 3.11; only Python itself (Colab: 3.13)
and torch/torchvision (Colab: 2.11.0+cu128 / 0.26.0+cu128; here 2.14.1 / 0.29.1) differ.

The bundle is installed from a ``git+file://`` URL: the checkout itself when its tree is clean (CI's
fresh clone: HEAD), else a snapshot commit of the working tree, uncommitted and untracked files
included, in a ``--shared`` clone under pytest's temporary folder (the checkout is never written).
``COLAB_STACK_SOURCE=REV`` tests a commit instead (``COLAB_STACK_SOURCE=bde6b6b``: the code issue 26
was filed on, whose ``ipywidgets>=8`` and ``~/nbutils-reports`` this test catches).

After the comparison, papermill (which Colab lacks) is installed into the environment, and that
install is checked to change nothing that was there; the kernel is a kernelspec whose argv is the
environment's python; the notebooks run from a fresh folder (Colab's /content) with HOME a fresh
folder too, NBUTILS_DATA the checkout's prepared data/, and none of the suite's NBUTILS_* settings
(NBUTILS_HEADLESS, NBUTILS_REPORTS, NBUTILS_PROFILE: ``-p profile smoke`` instead).

The test prints, and writes to ``colab-stack-report.md`` in its temporary folder, the facts for the
issue's closing note: the ``pip freeze`` diff and where a run's files land.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

try:
    from packaging.requirements import Requirement
except ImportError:  # pragma: no cover - pip always vendors it
    from pip._vendor.packaging.requirements import Requirement

pytestmark = pytest.mark.colab

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference" / "colab-runtime.md"
NOTEBOOKS = ("01_data", "02_model", "03_loss_optimizer_init", "04_training", "05_evaluation")
KERNEL = "colab-stack"

# colab-runtime.md's table (googlecolab/backend-info a724079, 2026-08-19), less Python and torch.
TABLE = {
    "ipywidgets": "7.7.1", "widgetsnbextension": "3.6.10", "jupyterlab_widgets": "3.0.16",
    "ipython": "7.34.0", "ipykernel": "6.17.1", "traitlets": "5.7.1",
    "jupyter_client": "7.4.9", "jupyter_core": "5.9.1", "notebook": "6.5.7",
    "nbformat": "5.11.1", "nbconvert": "7.17.1", "matplotlib": "3.10.0",
    "matplotlib-inline": "0.2.2", "numpy": "2.1.3", "pillow": "11.3.0", "tqdm": "4.67.3",
    "PyYAML": "6.0.3", "tornado": "6.5.7", "pytest": "8.4.2",
}
NOT_IN_COLAB = ("papermill", "nbval", "jupyterlab")  # the table's "not installed" row
STAND_INS = ("torch", "torchvision")  # this machine's, for Colab's CUDA builds
COLAB_PIP = "24.1.2"  # googlecolab/backend-info's pip-freeze.gpu.txt (not in the table)
RUN_FILES = ("params.json", "model.pt", "history.json", "metrics.json")


def canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()


TABLE_BY_CANON = {canon(k): v for k, v in TABLE.items()}


def subprocess_env(env_dir=None, home=None, **extra):
    """This process's environment without what would make the run differ from a user's: the suite's
    NBUTILS_* settings (conftest's NBUTILS_REPORTS, `nbutils test`'s NBUTILS_HEADLESS and
    NBUTILS_PROFILE), a Python path or venv, Jupyter's and matplotlib's overrides. With ``env_dir``
    its bin/ leads PATH (an activated environment); with ``home``, HOME is that folder."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "MPLBACKEND", "MPLCONFIGDIR",
            "IPYTHONDIR", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_CURRENT_TEST")
    env = {k: v for k, v in os.environ.items()
           if k not in drop and not k.startswith(("NBUTILS_", "JUPYTER_"))}
    if env_dir is not None:
        env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    if home is not None:
        env["HOME"] = str(home)
    env.update(extra)
    return env


def run(cmd, timeout=600, **kw):
    """``cmd``, its output captured; on failure the test fails with the command and its output's tail."""
    try:
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        out = [o.decode(errors="replace") if isinstance(o, bytes) else o or "" for o in (e.stdout, e.stderr)]
        pytest.fail(f"timed out after {timeout} s: {' '.join(map(str, cmd))}\n"
                    f"--- stdout\n{out[0][-6000:]}\n--- stderr\n{out[1][-6000:]}")
    if proc.returncode:
        pytest.fail(f"exit {proc.returncode}: {' '.join(map(str, cmd))}\n"
                    f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


# ----------------------------------------------------------------------------- the environment
def site_packages(env_dir):
    return env_dir / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def closure(names, skip):
    """The installed distributions ``names`` need (``Requires-Dist``, markers and extras evaluated),
    less ``skip``: canonical name -> Distribution."""
    found, extras_of, todo = {}, {}, [(n, frozenset()) for n in names]
    while todo:
        name, extras = todo.pop()
        key = canon(name)
        if key in skip or (key in found and extras <= extras_of[key]):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} is required by this machine's torch stack but not installed; "
                        f"run `python3 -m nbutils setup`")
        extras_of[key] = extras = extras | extras_of.get(key, frozenset())
        found[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append((req.name, frozenset(req.extras)))
    return found


def link_distribution(dist, site):
    """Hard-link each file of ``dist``'s RECORD (and the bytecode of its modules) into ``site``,
    as pip would have laid them out there; files outside site-packages (scripts) are left out."""
    if dist.files is None:
        pytest.fail(f"{dist.metadata['Name']} has no RECORD to link it by")
    root = str(dist.locate_file(""))
    count, made = 0, set()
    for entry in dist.files:
        rel = os.path.normpath(str(entry))
        if rel.startswith(".."):
            continue
        pairs = [(os.path.join(root, rel), os.path.join(site, rel))]
        if rel.endswith(".py"):
            pairs.append(tuple(map(importlib.util.cache_from_source, pairs[0])))
        for a, b in pairs:
            parent = os.path.dirname(b)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            try:
                os.link(a, b)
            except (FileNotFoundError, FileExistsError):  # not there (stale RECORD), or linked already
                continue
            except OSError:  # another file system: a symlink, which pip would remove, never follow
                if not os.path.exists(b):
                    os.symlink(a, b)
            count += 1
    return count


def freeze(python):
    """``pip freeze --all`` of the environment: canonical name -> its line."""
    out = run([python, "-m", "pip", "freeze", "--all"], env=subprocess_env()).stdout
    lines = {}
    for line in out.splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(==|@)", line)
        if m:
            lines[canon(m.group(1))] = line.strip()
    return lines


def freeze_diff(before, after):
    """``-old`` / ``+new`` lines of what changed between two freezes, and the names new in ``after``."""
    lines, new = [], []
    for key in sorted(set(before) | set(after)):
        if before.get(key) == after.get(key):
            continue
        if key in before:
            lines.append(f"-{before[key]}")
        if key in after:
            lines.append(f"+{after[key]}")
        if key not in before:
            new.append(key)
    return lines, new


def changed(before, after):
    """The packages of ``before`` that ``after`` changed or removed, as diff lines."""
    return [f"-{before[k]}  +{after.get(k, '(removed)')}" for k in sorted(before)
            if after.get(k) != before[k]]


def pip_install(python, args, timeout=900):
    return run([python, "-m", "pip", "install", "--disable-pip-version-check", *args],
               env=subprocess_env(), timeout=timeout)


@pytest.fixture(scope="session")
def report():
    """Facts gathered on the way, printed and written out at the end of the session."""
    facts = {"times": {}}
    yield facts
    if len(facts) > 1:
        text = render(facts)
        print("\n" + text)
        if facts.get("folder"):
            (Path(facts["folder"]) / "colab-stack-report.md").write_text(text)
            print(f"(written to {Path(facts['folder']) / 'colab-stack-report.md'})")


def render(facts):
    out = ["## Colab stack (tests/test_colab_stack.py)", ""]
    if "source" in facts:
        out += [f"bundle installed from: {facts['source']}", f"setup cell's pip line: `{facts['pip_line']}`", ""]
    if "diff" in facts:
        out += ["`pip freeze --all` before -> after the setup cell's install:", "```",
                *(facts["diff"] or ["(no difference)"]), "```"]
        out += [f"new packages: {', '.join(facts['new']) or 'none'}", ""]
    if "papermill_new" in facts:
        out += [f"then `pip install papermill` added: {', '.join(facts['papermill_new']) or 'none'}; "
                f"changed: {', '.join(facts['papermill_changed']) or 'nothing'}", ""]
    if "landed" in facts:
        out += ["where the run's files landed (cwd = the notebooks' folder):", "```", *facts["landed"], "```", ""]
    if "home" in facts:
        out += [f"nbutils' files under HOME: {', '.join(facts['home']) or 'none'} (HOME holds only "
                f"{', '.join(facts['home_dirs']) or 'nothing'})", ""]
    times = facts["times"]
    out += ["time: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
            + f"; total {sum(times.values()):.1f} s"]
    return "\n".join(out)


@pytest.fixture(scope="session")
def colab_env(tmp_path_factory, report):
    """A venv holding Colab's table of versions, this machine's torch standing in: (python, folder)."""
    folder = tmp_path_factory.mktemp("colab-stack")
    report["folder"] = str(folder)
    start = time.monotonic()
    env_dir = folder / "env"
    run([sys.executable, "-m", "venv", "--without-pip", env_dir], env=subprocess_env())
    python = env_dir / "bin" / "python"
    site = site_packages(env_dir)
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile",
         "--disable-pip-version-check", f"pip=={COLAB_PIP}"], env=subprocess_env())
    linked = closure(("setuptools",) + STAND_INS, skip={canon(n) for n in TABLE})
    files = sum(link_distribution(dist, site) for dist in linked.values())
    pip_install(python, ["-q", "--no-compile", *(f"{name}=={v}" for name, v in TABLE.items())])
    # A consistent stack, as Colab's is for these packages: else pip would "repair" it on any install.
    run([python, "-m", "pip", "check"], env=subprocess_env())
    report["times"]["env build"] = time.monotonic() - start
    report["linked"] = sorted(f"{d.metadata['Name']}=={d.version}" for d in linked.values())
    print(f"\ncolab env: {env_dir}; linked {len(linked)} distributions ({files} files) from "
          f"{Path(linked['torch'].locate_file(''))}: {', '.join(report['linked'])}")
    return python, folder


def bundle_source(folder):
    """The bundle to install, as ``(git+file:// URL, description, its tree)``: the checkout when its
    tree is clean (CI's fresh clone); else a commit of its working tree, uncommitted and untracked
    files included, in a ``--shared`` clone under ``folder``. ``COLAB_STACK_SOURCE=REV`` (``HEAD``,
    a commit, a branch) takes that commit of the checkout instead, however dirty the tree is. The
    notebooks run are that tree's too."""
    git = ["git", "-C", REPO]
    if subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip(f"{REPO} is not a git checkout")
    head = run([*git, "rev-parse", "HEAD"]).stdout.strip()
    touched = run([*git, "diff", "--name-only", "--no-renames", "-z", "HEAD"]).stdout.split("\0")
    untracked = run([*git, "ls-files", "--others", "--exclude-standard", "-z"]).stdout.split("\0")
    paths = sorted({p for p in touched + untracked if p})
    rev = os.environ.get("COLAB_STACK_SOURCE")
    if not paths and not rev:
        return f"git+file://{REPO}", f"{REPO} at HEAD {head[:12]} (a clean tree)", REPO
    clone = folder / "bundle-source"
    run(["git", "clone", "-q", "--shared", REPO, clone])
    if rev:
        commit = run([*git, "rev-parse", "--verify", f"{rev}^{{commit}}"]).stdout.strip()
        run(["git", "-C", clone, "checkout", "-q", "-B", "colab-stack", commit])
        return f"git+file://{clone}", f"{REPO}'s commit {commit[:12]} (COLAB_STACK_SOURCE={rev})", clone
    for rel in paths:
        src, dst = REPO / rel, clone / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        elif dst.exists() and not src.exists():
            dst.unlink()
    run(["git", "-C", clone, "add", "-A"])
    run(["git", "-C", clone, "-c", "user.name=colab-stack test", "-c", "user.email=test@localhost",
         "commit", "-q", "--no-verify", "-m", "the working tree, for tests/test_colab_stack.py"])
    return f"git+file://{clone}", (f"a snapshot of {REPO}'s working tree: HEAD {head[:12]} plus "
                                   f"{len(paths)} changed or untracked files"), clone


def setup_cell_pip_args(tree):
    """The pip arguments of the setup cell of ``tree``'s notebooks (one line, the same in 01-05),
    its ``git+https://`` URL marked as ``{url}``."""
    import ast
    found = set()
    for name in NOTEBOOKS:
        cells = json.loads((tree / "notebooks" / f"{name}.ipynb").read_text())["cells"]
        setup = [c for c in cells if "setup" in c.get("metadata", {}).get("tags", [])]
        assert len(setup) == 1, f"{name}: {len(setup)} cells tagged setup"
        source = "".join(setup[0]["source"])
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.List) and node.elts and ast.unparse(node.elts[0]) == "sys.executable":
                args = [ast.literal_eval(e) for e in node.elts[1:]]
                assert args[:3] == ["-m", "pip", "install"], f"{name}: setup cell runs {args}"
                found.add(tuple(re.sub(r"git\+https://\S+", "{url}", a) for a in args[2:]))
    assert len(found) == 1, f"the setup cells' pip lines differ: {found}"
    args = list(found.pop())
    assert sum("{url}" in a for a in args) == 1, f"no git+https:// URL in the setup cell's pip line {args}"
    return args


@pytest.fixture(scope="session")
def installed(colab_env, report):
    """The bundle installed into the Colab env as the setup cell does:
    (python, folder, the bundle's tree, freeze before, freeze after)."""
    python, folder = colab_env
    before = freeze(python)
    url, report["source"], tree = bundle_source(folder)
    args = setup_cell_pip_args(tree)
    args = [a.replace("{url}", url) for a in args]
    report["pip_line"] = "python -m pip " + " ".join(f'"{a}"' if " " in a else a for a in args)
    start = time.monotonic()
    run([python, "-m", "pip", *args], env=subprocess_env(), timeout=900)
    report["times"]["setup-cell install"] = time.monotonic() - start
    after = freeze(python)
    report["diff"], report["new"] = freeze_diff(before, after)
    report["new"] = [after[k] for k in report["new"]]
    return python, folder, tree, before, after


def test_table_matches_the_reference():
    """TABLE is colab-runtime.md's table (when shared/ sits beside the checkout, as in CI)."""
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} is absent")
    pairs = {}
    for line in REFERENCE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not re.match(r"^\d", cells[1]):
            continue
        for name, version in zip(cells[0].split(" / "), cells[1].split(" / ")):
            pairs[name.strip()] = re.match(r"\S+", version.strip()).group(0)
    pairs = {canon(k): v for k, v in pairs.items() if canon(k) not in ("python", *STAND_INS)}
    assert pairs == {canon(k): v for k, v in TABLE.items()}, \
        f"colab-runtime.md changed: update TABLE to {pairs}"


def test_setup_cell_install_leaves_colab_stack(installed):
    """pip freeze before and after the setup cell's install: nothing that was there changes."""
    python, folder, _, before, after = installed
    table = [canon(n) for n in (*TABLE, *STAND_INS)]
    missing = [n for n in table if n not in before]
    assert not missing, f"the Colab env lacks {missing}"
    wrong = [before[n] for n in map(canon, TABLE) if before[n].split("==")[-1] != TABLE_BY_CANON[n]]
    assert not wrong, f"the Colab env holds {wrong}, not the table's versions"
    assert not [n for n in NOT_IN_COLAB if canon(n) in before], "the Colab env holds packages Colab lacks"
    diff, new = freeze_diff(before, after)
    print("\npip freeze --all, before -> after the setup cell's install:\n  "
          + ("\n  ".join(diff) or "(no difference)"))
    assert canon("nbutils") in after, "the setup cell's install did not install nbutils"
    changed_table = changed({k: before[k] for k in table}, after)
    changed_other = changed({k: v for k, v in before.items() if k not in table}, after)
    assert not changed_table, ("the setup cell's install changed Colab's packages (in Colab: widgets "
                               "that do not render, a runtime restart):\n  " + "\n  ".join(changed_table))
    assert not changed_other, "the setup cell's install changed packages of the stack:\n  " + \
        "\n  ".join(changed_other)


def tree(root, skip_pycache=True):
    """Every file under ``root``: relative path -> (size, mtime_ns)."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip_pycache:
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in filenames:
            p = Path(dirpath, f)
            st = p.lstat()
            files[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return files


def test_notebooks_run_outside_the_checkout(installed, report):
    """Notebooks 01-05 under papermill in the Colab env, from a folder outside the checkout, on the
    smoke profile: the run's files land under that folder, none in the package or the home folder."""
    python, folder, bundle, _, after = installed
    data = REPO / "data"
    if not all((data / "FashionMNIST" / "raw" / f).is_file() for f in
               ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")):
        pytest.skip(f"the real Fashion-MNIST is not prepared in {data} (python3 -m nbutils setup)")
    # papermill, which Colab lacks, only after the freeze comparison; it must not change the stack.
    start = time.monotonic()
    pip_install(python, ["-q", "--no-compile", "papermill"])
    with_papermill = freeze(python)
    _, report["papermill_new"] = freeze_diff(after, with_papermill)
    report["papermill_changed"] = changed(after, with_papermill)
    assert not report["papermill_changed"], "installing papermill changed the Colab stack"
    run([python, "-m", "ipykernel", "install", "--prefix", python.parents[1], "--name", KERNEL],
        env=subprocess_env())
    spec = json.loads((python.parents[1] / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json").read_text())
    assert spec["argv"][0] == str(python), f"the kernel would run {spec['argv'][0]}, not the Colab env's python"
    report["times"]["papermill install"] = time.monotonic() - start

    work, home, executed = folder / "content", folder / "home", folder / "executed"
    for d in (work, home, executed):
        d.mkdir()
    for name in NOTEBOOKS:
        shutil.copy2(bundle / "notebooks" / f"{name}.ipynb", work)
    env_dir = python.parents[1]
    installed_before = tree(env_dir)
    work_before = set(tree(work))
    env = subprocess_env(env_dir, home=home, NBUTILS_DATA=str(data))
    for name in NOTEBOOKS:
        start = time.monotonic()
        run([python, "-m", "papermill", "--no-progress-bar", "-k", KERNEL, "-p", "profile", "smoke",
             "--execution-timeout", "300", f"{name}.ipynb", executed / f"{name}.ipynb"],
            cwd=work, env=env, timeout=600)
        report["times"][name] = time.monotonic() - start

    written = sorted(set(tree(work)) - work_before)
    in_home = sorted(tree(home))
    report["home"] = [p for p in in_home if "nbutils" in p or p.endswith(RUN_FILES + (".png", ".pt"))]
    report["home_dirs"] = sorted({str(Path(*Path(p).parts[:3])) for p in in_home if len(Path(p).parts) > 1})
    runs = sorted({Path(p).parent for p in written if Path(p).name == "params.json"})
    report["landed"] = [f"{work}/{p}" for p in written] + \
                       [f"$HOME/{p}  (HOME={home})" for p in report["home"]]
    if not written and report["home"]:
        pytest.fail(f"the run's files went to the home folder, which Colab's file browser does not "
                    f"show, not under the working directory {work}:\n  " + "\n  ".join(report["home"]))
    assert runs, f"no run folder (params.json) under {work}; it holds {written}"
    expected = Path("reports") / "interactive-smoke"
    assert runs == [expected], f"run folders {runs} under {work}, expected {expected}"
    run_dir = work / expected
    for name in RUN_FILES:
        assert (run_dir / name).stat().st_size > 0, f"{run_dir / name} is empty"
    figures = sorted((run_dir / "figures").glob("*.png"))
    assert figures, f"no figures/*.png in {run_dir}"
    assert all(f.stat().st_size > 0 for f in figures)
    assert not report["home"], f"files written under the home folder: {report['home']}"
    assert not (home / "nbutils-reports").exists()
    installed_after = tree(env_dir)
    changes = sorted(k for k in set(installed_before) | set(installed_after)
                     if installed_before.get(k) != installed_after.get(k))
    assert not changes, f"the notebooks wrote into the environment (the installed package): {changes}"
