"""Open a run's report.html in headless Chromium, screenshot it, and check its figures.

Usage: python scripts/check_report.py OUT/report.html [--screenshot report.png]

Exit 0 when the page loads in Chromium with at least one figure and no broken image; the
report's own load handler counts images whose data did not decode.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=5000"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("error: no Chromium found (Debian: apt-get install chromium)")


def check(report: Path, screenshot: Path, width: int = 1280) -> dict[str, int]:
    """Load `report`, read what its load handler counted (images, broken images, tables
    wider than their box, page height), and screenshot it at full page height."""
    url = report.resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        base = [chromium(), *FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run([*base, f"--window-size={width},4000", "--dump-dom", url], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        body = re.search(r"<body[^>]*>", dom)
        attrs = dict(re.findall(r'data-([a-z-]+)="(\d+)"', body.group(0) if body else ""))
        height = min(int(attrs.get("height", 4000)) + 40, 60_000)  # the whole page
        subprocess.run([*base, f"--screenshot={screenshot.resolve()}",
                        f"--window-size={width},{height}", url], capture_output=True,
                       timeout=180, check=True)
    return {"images": int(attrs.get("images", -1)),
            "broken": int(attrs.get("broken-images", -1)),
            "wide_tables": int(attrs.get("wide-tables", -1)), "height": height,
            "screenshot_bytes": screenshot.stat().st_size if screenshot.is_file() else 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--screenshot", type=Path, default=None)
    args = ap.parse_args()
    shot = args.screenshot or args.report.with_name("report_screenshot.png")
    res = check(args.report, shot)
    print(f"{args.report}: {res['images']} images, {res['broken']} broken, "
          f"{res['wide_tables']} tables wider than the page; screenshot {shot} "
          f"({res['screenshot_bytes']:,} bytes, 1280 x {res['height']} px)")
    ok = res["images"] > 0 and res["broken"] == 0 and res["screenshot_bytes"] > 10_000
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
