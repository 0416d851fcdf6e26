"""``robustctl ui`` in a real browser: one finished ``robustctl run`` (tiny, known run name), the
MLflow UI started the way users start it, the URL it prints opened in headless Chromium: the runs
table lists the run; the run page shows its description, its dataset inputs and its logged model.

MLflow 3.17's UI is a React single-page app: every check waits for the element it reads. The
runs table is an ag-grid (``div[role=row][row-id=<run id>]``, cells by ``col-id``); the run page
marks its parts with ``data-testid`` (``runs-header``, ``key-value-<field>``,
``note-editor-preview-content``) and ``<h4>`` section titles ("Datasets", "Logged models (N)").
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.browser.pages import ROBUSTCTL, robustctl_env, run_robustctl

pytestmark = pytest.mark.browser

RUN_NAME = "browser-ui-run"
TINY = [  # tests/conftest.py's ``tiny``: a ~1 s training run on synthetic data
    "dataset=synthetic",
    "dataset.num_samples=240",
    "trainer.epochs=2",
    "trainer.batch_size=32",
    "trainer.device=cpu",
    "trainer.eval_batch_size=64",
    "defense=none",
    "threat_model=none",
]
DRAWER = "//*[@role='dialog'][contains(., 'datasets used')]"  # the run's dataset drawer
WAIT = 60  # seconds for the app to fetch and draw (2 shared cores)


@dataclass
class Ui:
    base: str  # http://127.0.0.1:<port>
    printed: str  # what `robustctl ui` printed before handing over to MLflow
    experiment_id: str
    run: object  # mlflow.entities.Run
    models: list  # the run's MLflow LoggedModels


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (zombies aside)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Stop the MLflow UI: its process group (the server, its uvicorn workers and job runners)
    gets SIGTERM, then SIGKILL whatever is left after ``timeout`` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc.poll() is None or group_alive(proc.pid)):
        time.sleep(0.2)
    if proc.poll() is None or group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def wait_healthy(proc: subprocess.Popen, base: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"robustctl ui exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    pytest.fail(f"the MLflow UI did not answer {base}/health in {timeout} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    work = tmp_path_factory.mktemp("ui-runs")
    run_robustctl(["run", *TINY, f"work_dir={work}", f"tracking.run_name={RUN_NAME}"], work)
    client = MlflowClient(f"sqlite:///{work / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("robustctl")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == RUN_NAME and run.info.status == "FINISHED"
    models = [
        m
        for m in client.search_logged_models([experiment.experiment_id])
        if m.source_run_id == run.info.run_id
    ]

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = work / "ui.log"
    # the job runner (GenAI scheduled jobs; seven more processes) is not needed to browse runs
    env = robustctl_env() | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*ROBUSTCTL, "ui", f"work_dir={work}", "--port", str(port)],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one
        )
    try:
        wait_healthy(proc, base, log)
        yield Ui(base, log.read_text(), experiment.experiment_id, run, models)
    finally:
        stop_group(proc)


def wait_for(browser, condition, what: str, timeout: float = WAIT):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # the app redraws: an element found a moment ago may be gone; look again
    wait = WebDriverWait(
        browser, timeout, poll_frequency=0.25, ignored_exceptions=[StaleElementReferenceException]
    )
    try:
        return wait.until(condition)
    except TimeoutException:
        text = browser.execute_script("return document.body ? document.body.innerText : ''")
        pytest.fail(f"{what}: not shown in {timeout} s at {browser.current_url}:\n{text[:2000]}")


def shown(browser, by: str, selector: str):
    """A condition: the first displayed element found, else False."""

    def find(_):
        return next((e for e in browser.find_elements(by, selector) if e.is_displayed()), False)

    return find


def test_the_url_robustctl_ui_prints_lists_the_run(browser, ui, artifacts_dir):
    found = re.search(r"open (http://\S+)", ui.printed)
    assert found, f"robustctl ui printed no URL to open:\n{ui.printed}"
    url = found.group(1)
    assert url.startswith(f"{ui.base}/#/experiments/{ui.experiment_id}/runs"), url

    run_id = ui.run.info.run_id
    browser.get(url)
    name_cell = (
        f"//div[@role='row'][@row-id='{run_id}']//div[@role='gridcell']"
        "[@col-id='attributes.`Run Name`']//a"
    )
    link = wait_for(browser, shown(browser, "xpath", name_cell), f"run {RUN_NAME} in the table")
    assert link.text == RUN_NAME
    assert link.get_attribute("href").endswith(f"#/experiments/{ui.experiment_id}/runs/{run_id}")
    # the runs view itself, not the experiment's GenAI overview it may have redirected to
    assert f"#/experiments/{ui.experiment_id}/runs?" in browser.current_url
    assert browser.title.startswith(f"Runs - Experiment {ui.experiment_id}")
    browser.save_screenshot(str(artifacts_dir / "mlflow_ui_runs.png"))


@pytest.fixture(scope="module")
def run_page(browser, ui):
    """The run's page, loaded once for the tests below."""
    run_id = ui.run.info.run_id
    browser.get(f"{ui.base}/#/experiments/{ui.experiment_id}/runs/{run_id}")
    header = wait_for(browser, shown(browser, "css selector", "[data-testid=runs-header]"), "run")
    assert header.text == RUN_NAME
    return browser


def test_the_run_page_shows_the_run(run_page, ui):
    about = {
        field: wait_for(
            run_page, shown(run_page, "css selector", f"[data-testid='key-value-{field}']"), field
        ).text
        for field in ("Status", "Run ID", "Experiment ID")
    }
    assert "Finished" in about["Status"]
    assert ui.run.info.run_id in about["Run ID"]
    assert ui.experiment_id in about["Experiment ID"]


def markdown_tables(text: str) -> list[list[list[str]]]:
    """The Markdown tables of ``text``: rows of cell texts, header first, separators dropped."""
    tables: list[list[list[str]]] = []
    previous = False
    for line in text.splitlines():
        is_row = line.startswith("|")
        if is_row and not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not previous:
                tables.append([])
            tables[-1].append(cells)
        previous = is_row
    return tables


def test_the_run_page_shows_the_description(run_page, ui):
    """The ``mlflow.note.content`` tag, rendered from Markdown: its bold title and its tables."""
    note = ui.run.data.tags.get("mlflow.note.content")
    assert note, "robustctl run set no description (tag mlflow.note.content)"
    shown_note = wait_for(
        run_page,
        shown(run_page, "css selector", "[data-testid=note-editor-preview-content]"),
        "the description",
    )
    title = re.match(r"\*\*(.+?)\*\*", note)
    assert title, note
    assert shown_note.find_element("tag name", "strong").text == title.group(1)
    rendered = [
        [
            [c.get_attribute("textContent").strip() for c in row.find_elements("xpath", "th|td")]
            for row in table.find_elements("tag name", "tr")
        ]
        for table in shown_note.find_elements("tag name", "table")
    ]
    assert rendered == markdown_tables(note)
    assert rendered, "the description has no table"


def test_the_run_page_shows_the_dataset_inputs(run_page, ui):
    """The Datasets box names the first input; its drawer lists every input with its context."""
    from selenium.webdriver.common.keys import Keys

    inputs = ui.run.inputs.dataset_inputs
    assert inputs, "robustctl run logged no dataset inputs"
    box = wait_for(
        run_page,
        shown(run_page, "xpath", "//h4[normalize-space(text())='Datasets']/.."),
        "Datasets",
    )
    first = inputs[0].dataset
    assert f"{first.name} ({first.digest})" in box.text
    box.find_element("xpath", ".//div[@role='button']").click()
    wait_for(run_page, shown(run_page, "xpath", DRAWER), "the dataset drawer")
    expected = [f"{len(inputs)} datasets used"]
    for item in inputs:
        (context,) = [t.value for t in item.tags if t.key == "mlflow.data.context"]
        expected.append((f"{item.dataset.name} ({item.dataset.digest})", context))

    def listed(_):
        """Every input's label followed by its context: the drawer draws a dataset's context
        tag after its name (CI once read the text between the two), so wait for all of them."""
        drawer = shown(run_page, "xpath", DRAWER)(run_page)
        if not drawer:
            return False
        lines = drawer.text.splitlines()
        pairs = {(a, b.lower()) for a, b in zip(lines, lines[1:], strict=False)}
        return expected[0] in lines and all(pair in pairs for pair in expected[1:])

    wait_for(run_page, listed, f"the drawer listing {expected}")
    run_page.find_element("tag name", "body").send_keys(Keys.ESCAPE)
    wait_for(run_page, lambda d: not shown(d, "xpath", DRAWER)(d), "the drawer closing", 10)


def test_the_run_page_shows_the_logged_model(run_page, ui):
    """The "Logged models (N)" table links each model of the run to its page."""
    assert ui.models, "robustctl run logged no MLflow model"
    title = f"Logged models ({len(ui.models)})"  # the count arrives with its own request
    heading = wait_for(run_page, shown(run_page, "xpath", f"//h4[text()='{title}']"), title)
    section = heading.find_element("xpath", "../..")
    for model in ui.models:
        link = section.find_element(
            "css selector", f"a[href$='#/experiments/{ui.experiment_id}/models/{model.model_id}']"
        )
        assert link.is_displayed() and link.text == model.name
