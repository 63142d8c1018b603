"""The Prefect UI in headless Chromium after ``python -m deployments.run`` (what ``make run`` does).

Debian's ``chromium`` (``make browser-deps``) driven by Playwright's Python client: Playwright's
own browser download does not work here. The mlops run page is saved as a screenshot, into
docs/prefect-ui.png (the README's picture) when ``TAGIFAI_UPDATE_SCREENSHOT=1``, otherwise into
the test's temporary directory, so that a test run leaves the checkout as it was.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tagifai.config import REPO_ROOT
from tests.e2e.harness import Deployed, applied, deployed_platform

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(900)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "prefect-ui.png"
RUN_LINK = re.compile(r"^(dataops|mlops) run +(http://\S+/runs/flow-run/[0-9a-f-]{36})$", re.M)


@dataclass(frozen=True)
class Pipeline:
    platform: Deployed
    output: str
    run_links: dict[str, str]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A platform (server and worker) after one ``python -m deployments.run --no-deploy``."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run `make browser-deps` (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python client is missing")
    with (
        deployed_platform(tmp_path_factory.mktemp("browser"), ("server", "worker")) as platform,
        applied(platform.env),
    ):
        command = [sys.executable, "-m", "deployments.run", "--no-deploy", "--timeout", "400"]
        result = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        links = dict(RUN_LINK.findall(result.stdout))
        yield Pipeline(platform, result.stdout, links)


def test_run_prints_the_chain_and_its_outcome(pipeline: Pipeline) -> None:
    output = pipeline.output
    assert re.search(r"dataops +\S+: Completed", output)
    assert re.search(
        r"trigger +tagifai.snapshot.published -> mlops \S+ created [\d.]+ s later", output
    )
    assert re.search(r"mlops +\S+: Completed", output)
    assert re.search(r"^decision +v1 improved, deployed", output, re.M)  # first model: deployed
    assert re.search(r"^production +v1 \(snapshot [0-9a-f]+\): test F1 0\.\d+", output, re.M)
    assert set(pipeline.run_links) == {"dataops", "mlops"}
    ui = pipeline.platform.api_url.removesuffix("/api")
    assert all(link.startswith(f"{ui}/runs/flow-run/") for link in pipeline.run_links.values())


def test_prefect_ui_shows_both_runs_and_their_artifacts(pipeline: Pipeline, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    update_docs = os.environ.get("TAGIFAI_UPDATE_SCREENSHOT") == "1"
    screenshot = DOCS_SCREENSHOT if update_docs else tmp_path / "prefect-ui.png"

    ui = pipeline.platform.api_url.removesuffix("/api")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)

            page.goto(f"{ui}/runs")
            runs = page.locator("main") if page.locator("main").count() else page
            for flow in ("dataops", "mlops", "decide"):
                expect(runs.get_by_text(flow, exact=True).first).to_be_visible()

            page.goto(pipeline.run_links["dataops"])
            expect(page.get_by_text("Completed").first).to_be_visible()
            page.get_by_text("Artifacts", exact=True).click()
            expect(page.get_by_text("dataops-summary", exact=True)).to_be_visible()

            page.goto(pipeline.run_links["mlops"])
            # Where the run came from: the automation prefect.yaml's trigger created.
            expect(page.get_by_text("mlops on tagifai.snapshot.published").first).to_be_visible()
            page.get_by_text("Artifacts", exact=True).click()
            for key in ("evaluation-report", "confusion-matrix", "optuna-best-trial"):
                expect(page.get_by_text(key, exact=True).first).to_be_visible()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    assert screenshot.stat().st_size > 20_000
