"""`dvc plots show` renders without the network: .dvc/config points DVC at a page template with Vega,
Vega-Lite and vega-embed inline (DVC's own page loads them from a CDN and stays blank offline).

The test writes both chains' plots/by_t.csv (the analysis stage's columns) into a scratch DVC project
with this repository's dvc.yaml, params files and .dvc/config, runs `dvc plots show`, and loads the
page in headless Chromium with every host unresolvable: the two plots must be drawn. Set
PIFS_PLOTS_SCREENSHOT=<path.png> to keep a screenshot of the page.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.image import imread

from benchmarks.screenshots import chromium, find_chromium
from pipeline import io
from pipeline.analysis.headline import PLOT_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = find_chromium()
PLOTS = len(yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"])
OFFLINE = ("--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9")


def _project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    for f in ("dvc.yaml", "params.yaml", "params_learned.yaml"):
        shutil.copy(ROOT / f, proj / f)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=proj, check=True)
    for f in ("config", "plots_offline.html"):
        shutil.copy(ROOT / ".dvc" / f, proj / ".dvc" / f)
    for chain, scale in (("dvc", 1.0), ("dvc_learned", 1.5)):
        ts = [1000, 800, 600, 400, 200, 20]
        values = [
            {
                "t": t,
                "kappa": scale * (1 - t / 2000),
                "kappa_pi": scale * (0.95 - t / 2000),
                "delta_cross": scale * t / 5000,
            }
            for t in ts
        ]
        rows = [{c: v.get(c, 1) for c in PLOT_COLUMNS} for v in values]
        io.write_csv(proj / "outputs" / "analysis" / chain / "plots" / "by_t.csv", rows, PLOT_COLUMNS)
    return proj


def test_the_plots_page_loads_nothing_from_the_network(tmp_path):
    template = (ROOT / ".dvc" / "plots_offline.html").read_text()
    assert template.count("{plot_divs}") == 1 and "{scripts}" not in template
    assert not re.search(r"<script[^>]+src=", template)
    proj = _project(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "-o", "dvc_plots"],
        cwd=proj,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    page = (proj / "dvc_plots" / "index.html").read_text()
    assert not re.search(r"<script[^>]+src=", page) and "cdn." not in page
    assert page.count("vegaEmbed('#") == PLOTS  # κ̂_t, K_PI's κ̂_t, δ̂^cross_t


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (`apt-get install -y chromium`)"
)
def test_the_plots_render_in_chromium_with_the_network_off(tmp_path):
    proj = _project(tmp_path)
    subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "-o", "dvc_plots"], cwd=proj, check=True, timeout=300
    )
    page = (proj / "dvc_plots" / "index.html").as_uri()
    dom = chromium(CHROMIUM, tmp_path / "profile", *OFFLINE, "--dump-dom", page)
    # vega-embed drew each plot: its container class and a canvas per plot
    assert dom.count('class="vega-embed') == PLOTS and dom.count("<canvas") == PLOTS, dom[-2000:]
    shot = Path(os.environ.get("PIFS_PLOTS_SCREENSHOT") or tmp_path / "plots.png")
    chromium(CHROMIUM, tmp_path / "profile", *OFFLINE, "--window-size=1200,900", f"--screenshot={shot}", page)
    pixels = imread(shot)[..., :3]
    # lines were drawn: more than a few percent of the first screen is not white
    assert np.mean(pixels.min(axis=-1) < 0.9) > 0.01
