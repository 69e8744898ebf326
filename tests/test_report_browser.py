"""The report renders in a real browser: headless Chromium loads report.html, a script in the page counts
rendered tables and images with naturalWidth 0 and measures where the verdicts summary block sits, and the
test reads those figures from the dumped DOM. The first screen (1000 px) must hold the whole summary block
at a desktop (1400 px) and a narrow (800 px) width, with nothing wider than the window.

Needs Debian's chromium package (`apt-get install -y chromium`); skipped with that reason when absent.
Set PIFS_REPORT_SCREENSHOT=<path.png> to keep the screenshot taken here. benchmarks/screenshots.py takes the
same first-screen shots of the two reports `dvc repro` builds.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from benchmarks.screenshots import body_attrs, chromium

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed: `apt-get update && apt-get install -y chromium` (CI installs it)",
)


def _chromium(tmp_path: Path, *args: str) -> str:
    # the same headless invocation as the screenshot script; a failed run raises with its stderr
    return chromium(CHROMIUM, tmp_path / "chromium-profile", *args)


def _body_attrs(dom: str) -> dict[str, str]:
    assert re.search(r"<body([^>]*)>", dom), "no <body> in the dumped DOM"
    return body_attrs(dom)


@pytest.fixture(scope="module", params=["gaussian_oracle", "learned"])
def report(request):
    # the synthetic reports of tests/conftest.py, shared with test_analysis_report.py
    _, result = request.getfixturevalue("oracle_run" if request.param == "gaussian_oracle" else "learned_run")
    return result


def test_report_renders_every_table_and_image_in_chromium(report, tmp_path):
    dom = _chromium(tmp_path, "--dump-dom", report.report_html.as_uri())
    attrs = _body_attrs(dom)
    assert attrs.get("data-checked") == "yes", "the page's load handler did not run"
    tables = [k for k in report.table_results]
    # beside the reproduced tables: the covariance stage's λ_k table (and geometry tables when present)
    extra = [k for k in re.findall(r'<section data-table="([^"]*)">', dom) if k not in tables]
    assert any("λ_k" in k for k in extra), extra
    assert int(attrs["data-tables-rendered"]) == len(tables) + len(extra)
    assert int(attrs["data-images"]) == len(report.figures)
    assert attrs["data-broken-images"] == "0"
    for key in tables:
        assert re.search(rf'<section data-table="{key}">.*?<table class="ours">', dom, re.S), key
    for name in report.figures:
        assert f'<figure data-figure="{name}">' in dom, name
    if report.oracle is not None:
        assert 'data-oracle-agree="yes"' in dom


def test_screenshot_shows_the_rendered_page(report, tmp_path):
    shot = tmp_path / "report.png"
    _chromium(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", report.report_html.as_uri())
    img = imread(shot)
    assert img.shape[0] >= 2000 and img.shape[1] >= 1200
    assert float(np.std(img[..., :3])) > 0.05  # not a blank page
    keep = os.environ.get("PIFS_REPORT_SCREENSHOT")
    if keep and report.oracle is not None:
        shutil.copyfile(shot, keep)


@pytest.mark.parametrize("width", [1400, 800])
def test_summary_block_is_on_the_first_screen(report, tmp_path, width):
    from benchmarks.screenshots import FIRST_SCREEN_PX, shoot

    shot = shoot(CHROMIUM, report.report_html, tmp_path / "shots", width)
    assert 0 < shot.summary_top_px < shot.summary_bottom_px <= FIRST_SCREEN_PX, shot
    assert shot.page_width_px <= width, "the page is wider than the window (clipped on the right)"
    img = imread(shot.png)
    assert img.shape[1] == width and img.shape[0] == FIRST_SCREEN_PX
    dom = _chromium(
        tmp_path, f"--window-size={width},{FIRST_SCREEN_PX}", "--dump-dom", report.report_html.as_uri()
    )
    # one row per claim and per built table, before the nav and the first detail section
    block = re.search(r'<section id="summary".*?</section>', dom, re.S).group(0)
    keys = re.findall(r'<tr data-key="([^"]+)"', block)
    assert [k for k in keys if k.startswith("P")] == ["P1", "P2", "P3", "P4", "P5"]
    assert set(report.table_results) <= set(keys)
    assert dom.index('id="summary"') < dom.index("<nav>")


def test_a_broken_image_is_detected(report, tmp_path):
    # The check must be able to fail: corrupt one embedded image and expect a count of 1.
    html = report.report_html.read_text()
    bad = re.sub(r'src="data:image/png;base64,[^"]{0,40}', 'src="data:image/png;base64,AAAA', html, count=1)
    page = tmp_path / "broken.html"
    page.write_text(bad)
    attrs = _body_attrs(_chromium(tmp_path, "--dump-dom", page.as_uri()))
    assert attrs["data-broken-images"] == "1"
