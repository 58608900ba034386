"""Screenshots of a rendered digest in headless Chromium: 600 px, 375 px and dark mode.

Usage: python bench/email_screenshots.py DIGEST.html OUT_DIR

Needs Playwright for Python (`pip install playwright`) and a Chromium on PATH
(`apt-get install chromium`); `playwright install` is not needed. Writes
OUT_DIR/{800,600,375,600-dark,375-dark}.png (full page), NAME-top.png (the
first 1100 px) and NAME-end.png (the last 900 px), and prints their paths.
The CSS-less variant OUT_DIR/600-nostyle.png drops every <style> block, as
Gmail's mobile webmail does, to show what the inlined styles alone give.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

VARIANTS = [
    ("800", 800, "light", False),
    ("600", 600, "light", False),
    ("375", 375, "light", False),
    ("600-dark", 600, "dark", False),
    ("375-dark", 375, "dark", False),
    ("600-nostyle", 600, "light", True),
]


def main(html_path: str, out_dir: str) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("email_screenshots: no chromium on PATH")
    markup = Path(html_path).read_text(encoding="utf-8")
    without_style = re.sub(r"<style[^>]*>.*?</style>", "", markup, flags=re.S | re.I)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            for name, width, scheme, strip in VARIANTS:
                page = browser.new_page(
                    viewport={"width": width, "height": 1100}, color_scheme=scheme
                )
                page.set_content(without_style if strip else markup, wait_until="load")
                height = page.evaluate("document.documentElement.scrollHeight")
                end = {
                    "x": 0,
                    "y": max(0, height - 900),
                    "width": width,
                    "height": min(900, height),
                }
                for suffix, options in (
                    ("", {"full_page": True}),
                    ("-top", {}),
                    ("-end", {"full_page": True, "clip": end}),
                ):
                    path = out / f"{name}{suffix}.png"
                    page.screenshot(path=str(path), **options)
                    print(path)
                page.close()
        finally:
            browser.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
