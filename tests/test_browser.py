"""Notebooks 01-05 as a student sees them: JupyterLab in headless Chromium, driven by Playwright.

nbval and papermill run the notebooks without a frontend, so they cannot see a missing plot, a pile of
frames or a slider that does nothing. This test serves JupyterLab on 127.0.0.1, opens each notebook in
Debian's Chromium (launched by its path: Playwright's own browser download cannot work offline), runs
all cells with the smoke profile and waits for the kernel to go idle. Notebook 04 runs 3 epochs with
its live plot. Screenshots of every notebook land in ``reports/browser/``.

    python3 -m nbutils test -m browser      # this test alone
"""
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "reports" / "browser"
EPOCHS = 3  # notebook 04's live run
CHROMIUM = shutil.which("chromium")
# Without the background-networking flags Chromium keeps trying the closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Values a cell should never leave as its Out[]: they mean a stray return value.
CLUTTER = re.compile(r"^(PosixPath\(|<All keys matched|<Figure size|\[?<matplotlib\.)")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine: `apt-get install "
                       "chromium` (python3 -m nbutils test does it as root) or the browser test skips"),
]
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                 "(pip install -r requirements.txt)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_settings(config_dir):
    """Render every cell (no windowing: a screenshot shows the whole notebook) and never ask about
    news, which would cover the page and try the network."""
    settings = config_dir / "lab" / "user-settings" / "@jupyterlab"
    for extension, name, values in (
            ("notebook-extension", "tracker", {"windowingMode": "none"}),
            ("apputils-extension", "notification", {"fetchNews": "false", "checkForUpdates": False})):
        (settings / extension).mkdir(parents=True, exist_ok=True)
        (settings / extension / f"{name}.jupyterlab-settings").write_text(json.dumps(values))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 over a copy of notebooks/ (JupyterLab saves what it runs, and
    the committed notebooks stay without outputs). Its kernels see a live frontend and the smoke
    profile, and write their run folders into the copy."""
    work = tmp_path_factory.mktemp("lab")
    shutil.copytree(REPO / "notebooks", work / "notebooks")
    lab_settings(work / "config")
    env = {k: v for k, v in os.environ.items() if k not in ("NBUTILS_HEADLESS", "MPLBACKEND")}
    env.update(NBUTILS_PROFILE="smoke", NBUTILS_REPORTS=str(work / "reports"),
               JUPYTER_CONFIG_DIR=str(work / "config"), JUPYTER_RUNTIME_DIR=str(work / "runtime"))
    port, token = free_port(), "browser-test"
    log = open(work / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         "--expose-app-in-browser", "--LabApp.news_url=", "--ServerApp.log_level=WARN"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start:\n{(work / 'server.log').read_text()}")
            time.sleep(0.2)
    yield dict(url=url, token=token, work=work)
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def page(lab):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{lab['url']}/lab?token={lab['token']}")
        page.wait_for_function("window.jupyterapp", timeout=60_000)
        page.evaluate("async () => { await jupyterapp.started; await jupyterapp.restored; }")
        yield page
        browser.close()


# ----------------------------------------------------------------------------- driving JupyterLab
def open_notebook(page, name):
    """Open notebooks/<name> and wait until its kernel has started and is idle."""
    page.evaluate("async p => { await jupyterapp.commands.execute('docmanager:open', {path: p}); }",
                  f"notebooks/{name}")
    page.wait_for_function(
        """name => { const w = jupyterapp.shell.currentWidget;
                     return w && w.context && w.context.path.endsWith(name) && w.sessionContext
                         && w.sessionContext.session && w.sessionContext.session.kernel
                         && w.sessionContext.session.kernel.status === 'idle'; }""",
        arg=name, timeout=90_000)


def set_parameter(page, name, value):
    """Type ``name = value`` into the parameters cell, as a student would edit it."""
    page.evaluate(
        """([name, value]) => {
             const cell = jupyterapp.shell.currentWidget.content.widgets.find(
                 c => (c.model.getMetadata('tags') || []).includes('parameters'));
             const source = cell.model.sharedModel.getSource();
             const line = new RegExp('^' + name + ' = .*$', 'm');
             if (!line.test(source)) throw new Error('no parameter ' + name);
             cell.model.sharedModel.setSource(source.replace(line, name + ' = ' + value));
           }""", [name, value])


def start_run_all(page):
    page.evaluate("""() => { window.runAllDone = false;
        jupyterapp.commands.execute('notebook:run-all-cells').then(() => window.runAllDone = true); }""")


def finished(page):
    """Whether run-all has returned and the kernel is idle (the kernel's state, not text on the page)."""
    return page.evaluate("""() => window.runAllDone &&
        jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'""")


def wait_finished(page, timeout=120):
    deadline = time.monotonic() + timeout
    while not finished(page):
        assert time.monotonic() < deadline, "the notebook did not finish in time"
        time.sleep(0.2)


def cells(page):
    """Every cell of the open notebook: type, source, outputs (the model's, as nbformat JSON)."""
    return page.evaluate("jupyterapp.shell.currentWidget.content.model.sharedModel.cells"
                         ".map(c => c.toJSON())")


def find_cell(page, pattern=None, selector=None):
    """The index of the first code cell whose source matches ``pattern``, or whose output holds an
    element matching ``selector`` (a widget)."""
    index = page.evaluate(
        """([pattern, selector]) => jupyterapp.shell.currentWidget.content.widgets.findIndex(
             c => c.model.type === 'code' && (pattern ? new RegExp(pattern).test(
                 c.model.sharedModel.getSource()) : !!c.node.querySelector(selector)))""",
        [pattern, selector])
    assert index >= 0, f"no code cell with {pattern or selector!r}"
    return index


def training_state(page, index):
    """``[whether code cell index is running, the kernel's status, the cell's progress line]``."""
    return page.evaluate(
        """i => { const w = jupyterapp.shell.currentWidget, cell = w.content.widgets[i];
                  const line = [...cell.node.querySelectorAll('.jp-Cell-outputArea pre')]
                      .map(p => p.textContent).find(t => t.startsWith('epoch ')) || '';
                  return [cell.model.executionState === 'running',
                          w.sessionContext.session.kernel.status, line]; }""", index)


def cell_images(page, index):
    """The ``src`` of every <img> shown under code cell ``index``."""
    return page.evaluate(
        """i => [...jupyterapp.shell.currentWidget.content.widgets[i].node
                 .querySelectorAll('.jp-Cell-outputArea img')].map(img => img.src)""", index)


def wait_for_new_image(page, index, before, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = cell_images(page, index)
        if now and now != before:
            return now
        time.sleep(0.1)
    pytest.fail(f"the view under cell {index} did not change")


def screenshot(page, name):
    """The whole notebook: the viewport grows to the notebook's height for one shot."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    panel = ".jp-NotebookPanel:not(.lm-mod-hidden)"
    page.evaluate("jupyterapp.shell.collapseLeft()")
    height = page.evaluate(f"""() => {{ const cells = document.querySelectorAll('{panel} .jp-Cell');
        const last = cells[cells.length - 1];
        return last.offsetTop + last.offsetHeight; }}""")
    page.set_viewport_size({"width": 1280, "height": min(int(height) + 200, 20_000)})
    page.evaluate(f"document.querySelector('{panel} .jp-WindowedPanel-outer').scrollTop = 0")
    page.wait_for_timeout(500)
    page.screenshot(path=str(SCREENSHOTS / f"{Path(name).stem}.png"))
    page.set_viewport_size({"width": 1280, "height": 900})


def close_notebook(page):
    page.evaluate("""async () => { const w = jupyterapp.shell.currentWidget;
        await w.sessionContext.shutdown(); w.dispose(); }""")


def problems(notebook_cells):
    """Error outputs, stderr, and stray Out[] values, each named with its cell."""
    found = []
    for i, cell in enumerate(notebook_cells):
        for out in cell.get("outputs", []):
            where = f"cell {i} ({cell['source'].splitlines()[0][:50] if cell['source'] else ''})"
            if out["output_type"] == "error":
                found.append(f"{where}: {out['ename']}: {out['evalue']}")
            elif out["output_type"] == "stream" and out["name"] == "stderr":
                found.append(f"{where}: stderr {''.join(out['text'])[:300]!r}")
            elif out["output_type"] == "execute_result":
                text = "".join(out["data"].get("text/plain", ""))
                if CLUTTER.match(text):
                    found.append(f"{where}: stray output {text[:100]!r}")
    return found


def text_of(notebook_cells):
    return "\n".join("".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
                     for c in notebook_cells for out in c.get("outputs", []))


def digest(src):
    return hashlib.sha256(base64.b64decode(src.split(",", 1)[1])).hexdigest()


# ----------------------------------------------------------------------------- the tests
# One test per notebook, in order, in one JupyterLab: 05 evaluates the model that 04 trained.
TRAINING_CELL = r"net, history = train_run\("  # the cell that calls 04's program, not its definition


def run_notebook(page, name, **parameters):
    open_notebook(page, name)
    for key, value in parameters.items():
        set_parameter(page, key, value)
    start_run_all(page)
    wait_finished(page)
    return cells(page)


def test_01_runs_clean_and_its_slider_flips_through_images_and_patches(page):
    found = problems(run_notebook(page, "01_data.ipynb"))
    slider = page.locator(".widget-slider .noUi-handle").first
    if slider.count():
        index = find_cell(page, selector=".widget-slider")
        before = cell_images(page, index)
        assert len(before) == 1, f"the slider's view shows {len(before)} images"
        slider.focus()
        page.keyboard.press("ArrowRight")
        wait_for_new_image(page, index, before)
    else:
        found.append("no slider to flip through the training images")
    screenshot(page, "01_data")
    close_notebook(page)
    assert not found, "\n".join(found)


@pytest.mark.parametrize("name", ["02_model.ipynb", "03_loss_optimizer_init.ipynb"])
def test_02_and_03_run_clean(page, name):
    found = problems(run_notebook(page, name))
    screenshot(page, name)
    close_notebook(page)
    assert not found, "\n".join(found)


def test_04_live_plot_is_one_image_that_changes_every_epoch(page, lab):
    open_notebook(page, "04_training.ipynb")
    set_parameter(page, "epochs", str(EPOCHS))
    training = find_cell(page, pattern=TRAINING_CELL)
    start_run_all(page)
    frames, most_images, lines, idle_while_training = [], 0, [], 0
    while not finished(page):  # watched while it trains
        images = cell_images(page, training)
        most_images = max(most_images, len(images))
        if images and (not frames or digest(images[0]) != frames[-1]):
            frames.append(digest(images[0]))
        running, status, line = training_state(page, training)
        if running and line:
            idle_while_training += status == "idle"  # what JupyterLab's status bar shows
            if not lines or line != lines[-1]:
                lines.append(line)
        time.sleep(0.1)
    notebook = cells(page)
    final = cell_images(page, training)
    screenshot(page, "04_training")
    close_notebook(page)
    found = problems(notebook)
    if most_images != 1:
        found.append(f"the training cell held {most_images} images at once")
    if len(final) != 1:
        found.append(f"{len(final)} images under the training cell at the end, not one final figure")
    if len(frames) < EPOCHS:
        found.append(f"the plot changed {len(frames)} times over {EPOCHS} epochs")
    if not any(", batch " in line for line in lines) or len(lines) < 2 * EPOCHS:
        found.append(f"the progress line did not follow the batches: {lines}")
    if idle_while_training:
        found.append(f"the kernel's status (the status bar's) read idle {idle_while_training} times "
                     f"while the training cell ran")
    if "pipeline check" not in text_of(notebook):
        found.append("smoke-profile results are not labelled as a pipeline check")
    run_dir = lab["work"] / "reports" / "interactive-smoke"
    history = run_dir / "history.json"
    if not history.exists() or len(json.loads(history.read_text())) != EPOCHS:
        found.append(f"{history} does not hold {EPOCHS} epochs")
    assert not found, "\n".join(found)
    assert (run_dir / "figures" / "training.png").read_bytes()[:4] == b"\x89PNG"


def test_05_evaluates_04s_model_and_browses_mistakes_by_class(page, lab):
    notebook = run_notebook(page, "05_evaluation.ipynb")
    found = problems(notebook)
    if "pipeline check" not in text_of(notebook):
        found.append("smoke-profile results are not labelled as a pipeline check")
    metrics = json.loads((lab["work"] / "reports" / "interactive-smoke" / "metrics.json").read_text())
    if not metrics["epochs_run"] == metrics["params"]["epochs"] == EPOCHS:
        found.append(f"metrics.json: epochs_run {metrics['epochs_run']} beside the parameters' "
                     f"epochs {metrics['params']['epochs']}")
    dropdown = page.locator(".widget-dropdown select").first
    if dropdown.count():
        index = find_cell(page, selector=".widget-dropdown")
        before = cell_images(page, index)
        dropdown.select_option(index=7)  # shirt, among the hardest classes
        wait_for_new_image(page, index, before)
    else:
        found.append("no dropdown to browse the mistakes by class")
    screenshot(page, "05_evaluation")
    close_notebook(page)
    assert not found, "\n".join(found)
