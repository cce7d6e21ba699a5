"""The ``arkor-trio bench --html`` report in Chromium: self-contained, charts drawn, readable.

A real run of the command (its own process) against the test client with a defect writes the
page; Chromium opens it from disk with every network request recorded (there must be none).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[1] / "bench" / "sse_client.py"


def test_the_report_shows_figures_and_charts_without_fetching_anything(context, tmp_path):
    page_file = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "arkor_trio.cli", "bench", "--profiles", "clean,mid-frame",
         "--events", "30", "--html", str(page_file), "--",
         sys.executable, str(CLIENT), "{url}", "--defect", "partial"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(page_file.as_uri())
    assert requests == [page_file.as_uri()]  # no CDN, no font, no script: one file
    rows = page.locator("table tr")
    assert rows.count() == 3
    assert rows.nth(1).locator("td").first.text_content() == "clean"
    # The partial client corrupts events only when frames are cut in the middle.
    corrupt = rows.nth(2).locator("td").nth(9)
    assert int(corrupt.text_content() or "0") > 0
    assert corrupt.get_attribute("class") == "bad"
    assert rows.nth(1).locator("td").nth(9).get_attribute("class") == "good"
    for profile in ("clean", "mid-frame"):
        section = page.locator(f"#p-{profile} + p + .charts")
        assert section.locator("svg").count() == 2
        assert section.locator("svg circle").count() >= 30  # a dot per event handed over
        assert section.locator("svg rect[fill]").count() > 2  # gap bars and connections
        assert section.locator("figcaption").first.is_visible()
    page.click("text=What each figure means")
    assert page.locator("dt", has_text="Last-Event-ID").is_visible()
    shot = tmp_path / "bench-report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
