"""First-screen screenshots of analysis reports in headless Chromium, at a desktop and a narrow width.

    python -m benchmarks.screenshots [report.html ...] [--out DIR] [--widths 1400 800] [--height 1000]

Defaults: the two reports `dvc repro` builds (outputs/analysis/dvc/report.html, the Gaussian oracle, and
outputs/analysis/dvc_learned/report.html, the learned companion). For each report and width it writes
<DIR>/<report folder>-<width>.png (the first `--height` pixels) and reads back, from the page's own load
script, where the verdicts summary block sits and whether the page is wider than the window. Prints one
line per shot, then one JSON line with the figures. Needs Debian's `chromium` (apt-get install chromium).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DEFAULT_REPORTS = ("outputs/analysis/dvc/report.html", "outputs/analysis/dvc_learned/report.html")
WIDTHS = (1400, 800)
FIRST_SCREEN_PX = 1000


def find_chromium() -> str | None:
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def chromium(browser: str, profile: Path, *args: str, timeout: int = 120) -> str:
    """Run headless Chromium once with a throwaway profile; returns stdout (the DOM for --dump-dom)."""
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-1000:]}")
    return done.stdout


def body_attrs(dom: str) -> dict[str, str]:
    """The data-* attributes the report's load script set on <body>."""
    m = re.search(r"<body([^>]*)>", dom)
    return dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1))) if m else {}


@dataclass
class Shot:
    report: str
    width: int
    png: str
    summary_top_px: int
    summary_bottom_px: int
    page_width_px: int
    page_height_px: int


def shoot(browser: str, report: Path, out_dir: Path, width: int, height: int = FIRST_SCREEN_PX) -> Shot:
    """Screenshot the first ``height`` px of ``report`` at ``width`` and measure the summary block."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{report.parent.parent.name}-{report.parent.name}-{width}.png"
    with tempfile.TemporaryDirectory() as tmp:
        size = f"--window-size={width},{height}"
        chromium(browser, Path(tmp) / "profile", size, f"--screenshot={png}", report.resolve().as_uri())
        attrs = body_attrs(
            chromium(browser, Path(tmp) / "profile", size, "--dump-dom", report.resolve().as_uri())
        )
    if attrs.get("data-checked") != "yes":
        raise RuntimeError(f"{report}: the page's load script did not run (is it a pipeline report?)")
    return Shot(
        str(report),
        width,
        str(png),
        int(attrs.get("data-summary-top", -1)),
        int(attrs.get("data-summary-bottom", -1)),
        int(attrs.get("data-page-width", -1)),
        int(attrs.get("data-page-height", -1)),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="*", default=list(DEFAULT_REPORTS))
    ap.add_argument("--out", default="outputs/screenshots")
    ap.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    ap.add_argument("--height", type=int, default=FIRST_SCREEN_PX)
    args = ap.parse_args(argv)
    browser = find_chromium()
    if browser is None:
        print("error: no headless Chromium found — apt-get install chromium", file=sys.stderr)
        return 2
    missing = [r for r in args.reports if not Path(r).is_file()]
    if missing:
        print(f"error: {', '.join(missing)} not found — run `dvc repro` first", file=sys.stderr)
        return 2
    shots = []
    for r in args.reports:
        for w in args.widths:
            s = shoot(browser, Path(r), Path(args.out), w, args.height)
            shots.append(s)
            fits = "inside" if 0 <= s.summary_bottom_px <= args.height else "NOT inside"
            print(
                f"{s.report} @ {w}px: {s.png}; summary block {s.summary_top_px}-{s.summary_bottom_px} px "
                f"({fits} the first {args.height} px); page {s.page_width_px} x {s.page_height_px} px"
            )
    print(json.dumps({"first_screen_px": args.height, "shots": [asdict(s) for s in shots]}))
    return 0 if all(0 <= s.summary_bottom_px <= args.height for s in shots) else 1


if __name__ == "__main__":
    sys.exit(main())
