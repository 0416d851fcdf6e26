"""What the browser tests check on a rendered page: images loaded and shown, tables shown with
rows, full-page screenshots; and how they run ``robustctl`` in a subprocess."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROBUSTCTL = [sys.executable, "-m", "robustctl"]

# every <img>: loaded (complete, with pixels) and laid out with a size, visible
_IMAGES_JS = """
return [...document.images].map(img => {
  const box = img.getBoundingClientRect(), style = getComputedStyle(img);
  return {alt: img.alt, complete: img.complete, naturalWidth: img.naturalWidth,
          width: box.width, height: box.height, display: style.display,
          visibility: style.visibility};
});
"""

# the first <table> after a heading, before the next <h2>
_SECTION_TABLE_JS = """
let node = arguments[0].nextElementSibling;
while (node && node.tagName !== 'H2') {
  if (node.tagName === 'TABLE') return node;
  node = node.nextElementSibling;
}
return null;
"""


def robustctl_env() -> dict[str, str]:
    """The environment for a ``robustctl`` subprocess: no user tracking server, no telemetry,
    two torch threads, no line wrapping in what it prints."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        GIT_PYTHON_REFRESH="quiet",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        OMP_NUM_THREADS="2",
        COLUMNS="200",
    )
    return env


def run_robustctl(args: list[str], cwd: Path, timeout: float = 120) -> str:
    """Run ``robustctl ARGS`` in ``cwd``; its output, or an AssertionError with it."""
    proc = subprocess.run(
        [*ROBUSTCTL, *args],
        cwd=cwd,
        env=robustctl_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"robustctl {' '.join(args)} failed:\n{output[-4000:]}"
    return output


def image_problems(driver) -> list[str]:
    """One line per <img> of the current page that is broken (not loaded, no pixels) or not
    shown (no size, hidden, or not displayed as Selenium sees it); empty when all are fine."""
    problems = []
    elements = driver.find_elements("tag name", "img")
    for element, img in zip(elements, driver.execute_script(_IMAGES_JS), strict=True):
        name = img["alt"] or "<img without alt>"
        if not img["complete"]:
            problems.append(f"{name}: not loaded")
        if img["naturalWidth"] == 0:
            problems.append(f"{name}: broken (naturalWidth 0)")
        if img["width"] == 0 or img["height"] == 0:
            problems.append(f"{name}: laid out with no size ({img['width']}x{img['height']})")
        if img["display"] == "none" or img["visibility"] == "hidden":
            problems.append(f"{name}: hidden ({img['display']}, {img['visibility']})")
        elif not element.is_displayed():
            problems.append(f"{name}: not displayed")
    return problems


@dataclass
class ShownTable:
    """A table of the page as the browser laid it out."""

    heading: str
    displayed: bool
    width: float
    height: float
    header: list[str]
    rows: list[list[str]]

    def problems(self) -> list[str]:
        out = []
        if not self.displayed:
            out.append(f"{self.heading}: table not displayed")
        if self.width == 0 or self.height == 0:
            out.append(f"{self.heading}: table has no size ({self.width}x{self.height})")
        if not self.rows:
            out.append(f"{self.heading}: table has no rows")
        return out


def section_table(driver, heading_xpath: str) -> ShownTable | None:
    """The table under the <h2> found by ``heading_xpath``, None when that section has none."""
    headings = driver.find_elements("xpath", heading_xpath)
    assert len(headings) == 1, f"{heading_xpath}: {len(headings)} headings"
    table = driver.execute_script(_SECTION_TABLE_JS, headings[0])
    if table is None:
        return None
    box = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()", table)

    def cells(row, tag):
        return [c.get_attribute("textContent") for c in row.find_elements("tag name", tag)]

    return ShownTable(
        heading=headings[0].text,
        displayed=table.is_displayed(),
        width=box["width"],
        height=box["height"],
        header=cells(table.find_element("css selector", "thead tr"), "th"),
        rows=[cells(r, "td") for r in table.find_elements("css selector", "tbody tr")],
    )


def full_page_screenshot(driver, path: Path) -> Path:
    """The whole page, beyond the window's height (Chrome DevTools ``Page.captureScreenshot``)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
