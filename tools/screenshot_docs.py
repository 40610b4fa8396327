#!/usr/bin/env python
"""Screenshots of the rendered docs in headless Chromium, with checks that they show the content.

    python tools/screenshot_docs.py SITE [--pages index.html 21_norman.html] [--out DIR] [--chromium PATH]

For each page, Chromium (Debian's `chromium`, headless, no network, a fresh profile) renders the
file twice: once to a 1280x1600 PNG screenshot, once to the DOM after rendering (`--dump-dom`).
A page passes when the DOM holds the page's title (its `<h1>`, as build_docs.py writes it) and the
screenshot is not blank: its grey levels vary (std) and enough pixels carry ink. The report is
printed and written to DIR/report.json. Exit code 0: all pages pass; 1: a check failed; 2: no
Chromium (install it with `apt-get install chromium`).
"""
from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run', '--hide-scrollbars']
MIN_STD, MIN_INK = 8.0, 0.01  # a blank (or nearly blank) page has less grey-level spread and ink than this


def find_chromium(path: str | None = None) -> str | None:
    "The Chromium executable: `path`, else chromium / chromium-browser / google-chrome on PATH."
    if path: return path if Path(path).exists() else None
    return next((p for p in map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome')) if p), None)


def run_chromium(chromium: str, url: str, profile: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    "Chromium headless on `url` with a fresh profile folder."
    return subprocess.run([chromium, *FLAGS, f'--user-data-dir={profile}', *args, url], capture_output=True, text=True,
                          timeout=timeout)


def png_stats(png: Path) -> dict:
    "Grey-level std and ink fraction (pixels darker than 200 of 255) of a screenshot."
    import numpy as np
    from PIL import Image
    grey = np.asarray(Image.open(png).convert('L'), dtype=np.float64)
    return dict(width=grey.shape[1], height=grey.shape[0], std=float(grey.std()), ink=float((grey < 200).mean()))


def page_title(page: Path) -> str:
    "The `<h1>` text of a page written by build_docs.py (else its `<title>`)."
    text = page.read_text(encoding='utf-8')
    m = re.search(r'<h1[^>]*>(.*?)</h1>', text, re.S) or re.search(r'<title>(.*?)</title>', text, re.S)
    return html.unescape(re.sub(r'<[^>]+>', '', m.group(1))).strip() if m else ''


def check_page(chromium: str, page: Path, out: Path, size: str = '1280,1600') -> dict:
    "Screenshot and DOM of one page, and whether they show its content."
    png = out / f'{page.stem}.png'
    with tempfile.TemporaryDirectory(prefix='chromium-profile-') as prof:
        shot = run_chromium(chromium, page.resolve().as_uri(), Path(prof) / 'a', f'--screenshot={png}',
                            f'--window-size={size}')
        dom = run_chromium(chromium, page.resolve().as_uri(), Path(prof) / 'b', '--dump-dom')
    title = page_title(page)
    in_dom = bool(title) and title in html.unescape(dom.stdout)
    rep = dict(page=page.name, screenshot=str(png), title=title, title_in_dom=in_dom, dom_chars=len(dom.stdout))
    if not png.exists():
        return {**rep, 'ok': False, 'error': (shot.stderr.strip().splitlines() or ['no screenshot'])[-1]}
    rep.update(png_stats(png))
    rep['ok'] = rep['title_in_dom'] and rep['std'] >= MIN_STD and rep['ink'] >= MIN_INK
    return rep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('site', type=Path, help='folder written by `python tools/build_docs.py site`')
    ap.add_argument('--pages', nargs='+', default=['index.html', '21_norman.html'], help='pages to check')
    ap.add_argument('--out', type=Path, default=None,
                    help='folder for the PNGs and report.json (default: SITE/screenshots)')
    ap.add_argument('--chromium', default=None, help='Chromium executable (default: chromium on PATH)')
    a = ap.parse_args(argv)
    chromium = find_chromium(a.chromium)
    if not chromium:
        print('screenshot_docs: Chromium not found; install it (Debian: apt-get install chromium).', file=sys.stderr)
        return 2
    out = a.out or a.site / 'screenshots'; out.mkdir(parents=True, exist_ok=True)
    missing = [p for p in a.pages if not (a.site / p).exists()]
    if missing:
        print(f'screenshot_docs: pages {missing} are not in {a.site}; build the site first.', file=sys.stderr)
        return 1
    reports = [check_page(chromium, a.site / p, out) for p in a.pages]
    (out / 'report.json').write_text(json.dumps(reports, indent=1))
    for r in reports:
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['page']}: title {r['title']!r} in DOM: {r['title_in_dom']}, "
              f"std {r.get('std', 0):.1f}, ink {r.get('ink', 0):.3f} -> {r['screenshot']}")
    return 0 if all(r['ok'] for r in reports) else 1


if __name__ == '__main__':
    sys.exit(main())
