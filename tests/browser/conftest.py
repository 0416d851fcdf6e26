"""Real-browser tests: pages rendered by Debian's headless Chromium through Selenium.

Every test here carries the ``browser`` marker and is skipped, with the reason, where
``/usr/bin/chromium`` or ``/usr/bin/chromedriver`` (``apt-get install chromium chromium-driver``)
or the ``selenium`` package is missing. Selenium Manager never runs (it would try to download a
driver): the driver and the browser are given by path, ``SE_OFFLINE`` is set, and the session
fails if Selenium Manager is asked anyway. Screenshots go to ``$ROBUSTCTL_TEST_ARTIFACTS``
(default ``reports/test-artifacts``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1400, 1000)
# headless, as root, on a closed network: no sandbox, no GPU, nothing that phones home
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
REPO = Path(__file__).resolve().parents[2]


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file() or not os.access(path, os.X_OK):
            return (
                f"browser test: {path} not found "
                "(install Chromium and its driver: apt-get install chromium chromium-driver)"
            )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "browser test: the selenium package is not installed (pip install -e '.[dev]')"
    return None


def pytest_collection_modifyitems(config, items):
    """Skip ``browser`` tests up front (before their module fixtures train any model) where the
    browser cannot run."""
    reason = missing_browser()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """One headless Chromium (Selenium webdriver) for the session, window 1400x1000, fresh
    profile; quit (browser and driver processes) at the end."""
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def no_selenium_manager(self, *args, **kwargs):
        raise AssertionError(f"Selenium Manager was asked for a driver: {args}")

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")
        patch.setattr(SeleniumManager, "binary_paths", no_selenium_manager)
        driver = webdriver.Chrome(
            options=options, service=Service(executable_path=str(CHROMEDRIVER))
        )
    try:
        driver.set_window_size(*WINDOW)
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where the browser tests keep their screenshots: ``$ROBUSTCTL_TEST_ARTIFACTS``, else
    ``<repo>/reports/test-artifacts`` (ignored by git)."""
    path = Path(os.environ.get("ROBUSTCTL_TEST_ARTIFACTS") or REPO / "reports" / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path
