"""``report.html`` in a real browser: built from two real runs (CE and PDM, every threat model on
tiny budgets), opened from disk, every table shown with its rows and every figure loaded and
shown; a full-page screenshot is kept as ``report.png``."""

from __future__ import annotations

import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.browser.pages import full_page_screenshot, image_problems, run_robustctl, section_table

pytestmark = pytest.mark.browser

# one sweep (a parent run, a child per loss): the whole protocol in ~15 s per child on 2 cores
SWEEP = [
    "-m",
    "loss=ce,pdm",
    "dataset=synthetic",
    "dataset.num_samples=240",
    "trainer.epochs=2",
    "trainer.batch_size=32",
    "trainer.device=cpu",
    "trainer.eval_batch_size=64",
    "defense=kde",
    "threat_model=all",
    "threat_model.num_samples=30",
    "threat_model.attacks=[fgsm-0.1]",
    "threat_model.resiliency_attacks=[fgsm]",
    "threat_model.resiliency_eps=[0.05,0.1]",
    "threat_model.whitebox.steps=20",
    "threat_model.whitebox.lr=0.1",
    "threat_model.fmn_wb.steps=20",
    "threat_model.blackbox.epochs=1",
    "threat_model.blackbox.proxy_model=resnet20",
]
PNG_SIGNATURE_B64 = "iVBORw0KGgo"  # base64 of the 8-byte PNG signature


@dataclass
class Built:
    report: object  # robustctl.reporting.Report
    html: Path
    figures: list[str]  # the artifact path of every run figure the page should show


def run_figures(client, run_id: str) -> list[str]:
    """The run's logged plots that a report shows (``render.FIGURES`` and the per-attack
    confusion matrices), as listed by the store."""
    from robustctl.reporting.render import FIGURES

    wanted = {path for path, _ in FIGURES}
    paths = [f.path for d in ("plots", "plots/graybox") for f in client.list_artifacts(run_id, d)]
    return [p for p in paths if p in wanted or re.fullmatch(r"plots/graybox/.+_confusion\.png", p)]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    from mlflow.tracking import MlflowClient

    from robustctl.reporting import build_report

    work = tmp_path_factory.mktemp("report-runs")
    run_robustctl(["run", *SWEEP, f"work_dir={work}", f"hydra.sweep.dir={work}/multirun"], work)
    uri = f"sqlite:///{work / 'mlruns.db'}"
    report = build_report(uri, experiment="robustctl", out_dir=work / "report")
    client = MlflowClient(uri)
    figures = [p for run in report.used for p in run_figures(client, run.run_id)]
    return Built(report, report.files["report.html"], figures)


def test_every_table_and_figure_of_the_report_is_shown(browser, built, artifacts_dir):
    report = built.report
    assert [r.loss for r in report.used] == ["ce", "pdm"]
    browser.get(built.html.as_uri())
    assert browser.title == report.title

    for table in report.tables:  # Tables 1-4 and the white-box ratios
        assert table.rows, f"the runs should fill {table.key}"
        shown = section_table(browser, f"//h2[@id='{table.key}']")
        assert shown is not None, f"{table.key}: no table on the page"
        assert shown.problems() == []
        assert len(shown.header) == len(table.columns), table.key
        assert len(shown.rows) == len(table.rows), table.key
        assert all(len(row) == len(table.columns) for row in shown.rows), table.key

    columns = section_table(browser, "//h2[@id='columns']")
    assert columns is not None and columns.problems() == []
    assert len(columns.rows) == len(report.columns) == 2  # one column per loss

    runs = section_table(browser, "//h2[normalize-space()='Runs']")
    assert runs is not None and runs.problems() == []
    run_id = runs.header.index("run id")
    assert [row[run_id] for row in runs.rows] == [r.run_id for r in report.used]

    assert image_problems(browser) == []
    budget = [f.name for f in report.budget_figures]
    assert budget == ["whitebox_budget_synthetic.png"]
    # per run: confusion matrix, t-SNE, ROC, resiliency, one attack's confusion
    assert len(built.figures) == 2 * 5
    shown = [img.get_attribute("alt") for img in browser.find_elements("tag name", "img")]
    assert Counter(shown) == Counter(budget + built.figures)

    png = full_page_screenshot(browser, artifacts_dir / "report.png")
    width, height = struct.unpack(">II", png.read_bytes()[16:24])  # the PNG's IHDR
    page_height = browser.execute_script("return document.documentElement.scrollHeight")
    assert height >= page_height > 1000 and width > 0


def test_the_checks_fail_on_a_broken_image_and_a_hidden_table(browser, built, tmp_path):
    """The same checks on a copy of the page with one figure's PNG corrupted and Table 3 hidden
    report exactly those two (so they are able to fail)."""
    page = built.html.read_text(encoding="utf-8")
    prefix = 'src="data:image/png;base64,'
    starts = [m.end() for m in re.finditer(re.escape(prefix), page)]
    assert len(starts) == 1 + len(built.figures)
    at = starts[3]  # a run figure
    assert page[at : at + len(PNG_SIGNATURE_B64)] == PNG_SIGNATURE_B64
    broken_alt = re.findall(r'<img alt="([^"]+)" src="data:', page)[3]
    page = page[:at] + "A" * len(PNG_SIGNATURE_B64) + page[at + len(PNG_SIGNATURE_B64) :]
    heading = page.index('<h2 id="table3">')
    table = page.index("<table>", heading)
    page = page[:table] + '<table style="display:none">' + page[table + len("<table>") :]
    copy = tmp_path / "report.html"
    copy.write_text(page, encoding="utf-8")

    browser.get(copy.as_uri())
    assert image_problems(browser) == [f"{broken_alt}: broken (naturalWidth 0)"]
    hidden = section_table(browser, "//h2[@id='table3']")
    assert hidden is not None
    title = built.report.table("table3").title
    assert hidden.problems() == [
        f"{title}: table not displayed",
        f"{title}: table has no size (0x0)",
    ]
    assert section_table(browser, "//h2[@id='table2']").problems() == []
