"""The HTML report in a real headless Chromium (Debian's ``chromium``, driven by playwright with
``executable_path``; no browser is downloaded): both report kinds load from ``file://`` with no
console error and no network request, every plot has data points and drew pixels, and a
screenshot is written to ``test-artifacts/``. The "Open in Perfetto" button is checked against a
stub of ui.perfetto.dev (served by the browser's request interception, not the network) that
speaks Perfetto's postMessage protocol: it answers PING with PONG and records what it is sent.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from report_support import artifact, demo_record

from ddscope.exporters.report import build_comparison, build_report, trace_embed
from ddscope.exporters.trace.perfetto import export_perfetto

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)"
)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UI = "https://ui.perfetto.dev"
# The stand-in for ui.perfetto.dev: Perfetto's documented protocol, as seen from the UI side.
STUB_UI = """<!DOCTYPE html><html><body>stub ui<script>
window.received = null;
window.addEventListener("message", async (e) => {
  if (e.data === "PING") { e.source.postMessage("PONG", "*"); return; }
  if (e.data && e.data.perfetto) {
    const bytes = new Uint8Array(e.data.perfetto.buffer);
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    window.received = {
      size: bytes.length,
      sha256: Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""),
      title: e.data.perfetto.title,
      fileName: e.data.perfetto.fileName,
    };
  }
});
</script></body></html>"""


@pytest.fixture(scope="module")
def runs() -> dict[str, Path]:
    """Made before the browser starts: playwright's sync API runs an event loop."""
    return {scenario: demo_record(scenario) for scenario in ("healthy", "rate-limited")}


@pytest.fixture(scope="module")
def browser(runs: dict[str, Path]) -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        # playwright gives each launch a fresh, temporary user-data-dir
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


class Page:
    """A page with its console errors and every request it made recorded."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1300, "height": 900})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.context.route(f"{UI}/**", self._stub_ui)
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("request", lambda request: self.requests.append(request.url))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    @staticmethod
    def _stub_ui(route: Any) -> None:
        route.fulfill(status=200, content_type="text/html", body=STUB_UI)

    def load(self, html: Path) -> Any:
        self.page.goto(html.resolve().as_uri())
        self.page.wait_for_function("window.ddscopePlots !== undefined", timeout=30_000)
        return self.page

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[Page]:
    page = Page(browser)
    yield page
    page.close()


def check_plots(page: Any) -> list[dict[str, Any]]:
    slots = page.locator("[data-plot]").count()
    plots = page.evaluate("window.ddscopePlots")
    assert slots > 0 and len(plots) == slots
    empty = [p["title"] for p in plots if p["points"] <= 0]
    assert not empty, f"plots without data points: {empty}"
    # and each drew something: non-transparent pixels on its canvas
    painted = page.evaluate(
        """() => Array.from(document.querySelectorAll("[data-plot] canvas")).map((c) => {
             const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
             let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; })"""
    )
    assert len(painted) == slots and all(n > 100 for n in painted), painted
    return list(plots)


def test_single_run_report_loads_offline_and_draws_every_plot(
    tab: Page, runs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    build_report(runs["rate-limited"], out)
    page = tab.load(out)
    plots = check_plots(page)
    titles = " ".join(p["title"] for p in plots)
    for expected in ("Rows over time", "Throughput", "limit, in flight", "model slots", "latency"):
        assert expected in titles
    assert tab.errors == []
    assert tab.requests == [out.resolve().as_uri()]  # the page itself, nothing else
    assert "DEGRADED" in page.inner_text(".verdict") or "HEALTHY" in page.inner_text(".verdict")
    assert page.evaluate("document.getElementById('download-trace').href").startswith("blob:")
    page.screenshot(path=str(artifact("report-rate-limited.png")), full_page=True)


def test_comparison_report_loads_offline_and_marks_the_better_side(
    tab: Page, runs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "compare.html"
    build_comparison(runs["rate-limited"], runs["healthy"], out)
    page = tab.load(out)
    check_plots(page)
    assert tab.errors == []
    assert tab.requests == [out.resolve().as_uri()]
    row = page.locator("table.compare tr", has_text="429 answers")
    assert row.locator("td.better").count() == 1
    assert row.locator("td").nth(2).get_attribute("class") == "better"  # B: the healthy run
    page.screenshot(path=str(artifact("report-comparison.png")), full_page=True)


def _sent_to_perfetto(tab: Page, page: Any) -> dict[str, Any]:
    with page.expect_popup() as popup_info:
        page.click("#open-perfetto")
    popup = popup_info.value
    assert popup.url.startswith(UI)
    popup.wait_for_function("window.received !== null", timeout=30_000)
    received: dict[str, Any] = popup.evaluate("window.received")
    page.wait_for_function(
        "document.getElementById('perfetto-status').textContent.startsWith('Sent')"
    )
    return received


def test_open_in_perfetto_posts_the_trace_bytes(
    tab: Page, runs: dict[str, Path], tmp_path: Path
) -> None:
    record = runs["healthy"]
    out = tmp_path / "report.html"
    result = build_report(record, out)
    assert result.trace_embedded
    trace = tmp_path / "expected.pftrace"
    export_perfetto(record, trace)
    expected = trace.read_bytes()
    page = tab.load(out)
    received = _sent_to_perfetto(tab, page)
    assert received["size"] == len(expected)
    assert received["sha256"] == hashlib.sha256(expected).hexdigest()
    assert received["fileName"] == "run.pftrace" and "run" in received["title"]
    assert tab.errors == []


def test_a_trace_too_large_to_embed_is_chosen_by_hand_and_posted(
    tab: Page, runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trace_embed, "MAX_EMBED_BYTES", 10)  # every trace is "too large"
    record = runs["healthy"]
    out = tmp_path / "report.html"
    result = build_report(record, out)
    assert not result.trace_embedded and "too large" in (result.note or "")
    trace = tmp_path / "run.pftrace"
    export_perfetto(record, trace)
    page = tab.load(out)
    assert "Not embedded" in page.inner_text(".trace")
    page.set_input_files("#trace-file", str(trace))
    received = _sent_to_perfetto(tab, page)
    assert received["sha256"] == hashlib.sha256(trace.read_bytes()).hexdigest()
    assert tab.errors == []
