"""report.html opened in a real browser (Debian's headless chromium): what it draws, not only what
the file says. Skipped, with the reason, where /usr/bin/chromium is not installed. The screenshot
is kept under the test's tmp_path and its path printed."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared.report_html import write_html
from tests.browser.chromium import Chromium, count_colours, read_png, require
from tests.unit.test_report_html import HOSTILE, JOB_FILE, Document, synthetic_report

OK_GREEN, FAILED_VERMILLION = (0, 158, 115), (213, 94, 0)  # report_html's --ok and failed pattern


@pytest.fixture(scope="module")
def chromium(tmp_path_factory) -> Chromium:
    return require(tmp_path_factory.mktemp("chromium-profile"))


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[dict, Path]:
    report = synthetic_report(24, nodes=3, slots=2, fail_every=6)
    path = tmp_path_factory.mktemp("report") / "report.html"
    with path.open("w", encoding="utf-8") as out:
        write_html(report, JOB_FILE, out)
    return report, path


def test_the_browser_draws_a_bar_per_task_and_lists_the_failures(chromium, page):
    report, path = page
    dom = Document(chromium.dump_dom(path))
    bars = dom.find("rect", "task")
    assert sorted(b.attrs["data-task"] for b in bars) == [e["task_id"] for e in report["entries"]]
    failed = [e["task_id"] for e in report["entries"] if e["outcome"] == "failed"]
    assert len(failed) == 4
    assert {b.attrs["data-task"] for b in bars if "failed" in b.classes} == set(failed)
    assert [li.attrs["data-task"] for li in dom.find("li", "failure")] == failed
    # the hostile stderr stayed text: no script or image element, and the title is the report's
    assert not dom.find("script") and not dom.find("img")
    assert all(HOSTILE in "".join(pre.text) for pre in dom.find("pre", "stderr"))
    assert "".join(dom.find("title")[0].text) == "batchdrop run j-0123456789abcdef"


def test_the_screenshot_shows_the_bars_in_their_colours(chromium, page, tmp_path):
    report, path = page
    shot = chromium.screenshot(path, tmp_path / "report.png")
    print(f"\nreport.html screenshot: {shot}")
    png = read_png(shot)
    assert (png.width, png.height) == (1280, 2200)
    # 20 succeeded bars of ~20 s in a ~3 min timeline are ~100 px wide each, the 4 failed ones
    # hatched; the legend's swatches alone hold ~300 px of either colour
    enough = {"ok": 3000, "failed": 600}
    counts = count_colours(png, {"ok": OK_GREEN, "failed": FAILED_VERMILLION}, enough)
    assert all(counts[kind] >= enough[kind] for kind in enough), counts
