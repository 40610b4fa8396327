#!/usr/bin/env python
"""Offline documentation for perturbdiff, for machines without quarto.

`nbdev_docs` (which needs quarto) builds the full site where quarto exists. This script is the
fallback that works offline: it renders the notebooks in `nbs/` to a browsable HTML site with a
sidebar, and writes README.md from `nbs/index.ipynb` (what `nbdev_readme` does with quarto).

    python tools/build_docs.py site [--out _site] [--execute] [--only 00b_data index]
    python tools/build_docs.py readme [--check]

Processing follows nbdev's conventions: cells marked `#| hide` are dropped, other `#|` directive
lines are removed from the code shown, the notebook's `# Title` and `> subtitle` become the page
heading. With `--execute`, each notebook is first run (cwd = nbs/, as nbdev_test does) so the pages
show outputs; without it, the outputs saved in the notebooks are shown.
"""
from __future__ import annotations

import argparse
import copy
import html
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / 'nbs'
DIRECTIVE = re.compile(r'^\s*#\s*\|\s*(\w[\w-]*)(.*)$')


def directives(source: str) -> dict[str, str]:
    "The `#| name args` directives of a cell's source."
    out = {}
    for line in source.splitlines():
        m = DIRECTIVE.match(line)
        if m: out[m.group(1)] = m.group(2).strip()
    return out


def process(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    "A copy of `nb` as the docs show it: hidden cells dropped, directive lines removed."
    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == 'code':
            d = directives(cell.source)
            if 'hide' in d or 'default_exp' in d and len(cell.source.strip().splitlines()) == 1: continue
            cell.source = '\n'.join(l for l in cell.source.splitlines() if not DIRECTIVE.match(l)).strip()
            if not cell.source and not cell.get('outputs'): continue
        cell.metadata = {}
        cells.append(cell)
    nb.cells = cells
    return nb


def title_of(nb: nbformat.NotebookNode, fallback: str) -> tuple[str, str]:
    "The notebook's title (`# Title`) and subtitle (`> ...`)."
    for cell in nb.cells:
        if cell.cell_type != 'markdown': continue
        m = re.search(r'^#\s+(.+)$', cell.source, re.M)
        if m:
            sub = re.search(r'^>\s*(.+)$', cell.source, re.M)
            return m.group(1).strip(), (sub.group(1).strip() if sub else '')
    return fallback, ''


def execute(nb: nbformat.NotebookNode, timeout: int = 1800) -> nbformat.NotebookNode:
    "Run a notebook in a fresh kernel with cwd nbs/."
    from nbclient import NotebookClient
    NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(NBS)}}).execute()
    return nb


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} – perturbdiff</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ margin: 0; font-family: system-ui, sans-serif; display: flex; }}
nav {{ width: 260px; min-height: 100vh; background: #f4f6f8; padding: 1em; box-sizing: border-box; flex-shrink: 0; }}
nav a {{ display: block; padding: .25em 0; color: #1f4e79; text-decoration: none; font-size: .95em; }}
nav a.current {{ font-weight: bold; }}
main {{ flex: 1; padding: 1.5em 2.5em; max-width: 1100px; overflow-x: auto; }}
.subtitle {{ color: #555; font-size: 1.1em; margin-top: -.5em; }}
</style>{head}</head>
<body><nav><a href="index.html"><b>perturbdiff</b></a><hr>{nav}</nav>
<main><h1 class="page-title">{title}</h1><p class="subtitle">{subtitle}</p>{body}</main></body></html>
"""


def render_body(nb: nbformat.NotebookNode) -> tuple[str, str]:
    "HTML body and head extras of a processed notebook (nbconvert's basic template)."
    from nbconvert import HTMLExporter
    exp = HTMLExporter(template_name='basic')
    exp.embed_images = True
    body, _ = exp.from_notebook_node(nb)
    head = ('<style>.jp-InputPrompt,.jp-OutputPrompt,.prompt{display:none} pre{background:#f8f8f8;padding:.6em;'
            'overflow-x:auto} table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:.2em .5em}</style>')
    return body, head


FRONTMATTER_ITEM = re.compile(r'^-\s+(\S.*:.*\S)\s*$', re.M)  # nbdev's `- key: value` lines of the title cell


def frontmatter(nb: nbformat.NotebookNode) -> dict:
    "nbdev front matter of the title cell (`- key: value` lines, e.g. `- skip_exec: true`)."
    import yaml
    for cell in nb.cells:
        if cell.cell_type == 'markdown' and re.search(r'^#\s+', cell.source, re.M):
            items = FRONTMATTER_ITEM.findall(cell.source)
            try: return (yaml.safe_load('\n'.join(items)) or {}) if items else {}
            except yaml.YAMLError: return {}
    return {}


def drop_title(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    "Remove the `# Title` / `> subtitle` lines (they go into the page heading) and the front-matter items."
    for cell in nb.cells:
        if cell.cell_type == 'markdown' and re.search(r'^#\s+', cell.source, re.M):
            cell.source = re.sub(r'^#\s+.*$\n?', '', cell.source, count=1, flags=re.M)
            cell.source = re.sub(r'^>\s*.*$\n?', '', cell.source, count=1, flags=re.M)
            cell.source = FRONTMATTER_ITEM.sub('', cell.source).strip()
            break
    return nb


def build_site(out: Path, only: list[str] | None = None, run: bool = False) -> list[Path]:
    "Render nbs/*.ipynb (or the `only` stems) to `out`; returns the pages written."
    paths = sorted(NBS.glob('*.ipynb'))
    if only: paths = [p for p in paths if p.stem in set(only)]
    if not paths: raise SystemExit(f"No notebooks to render in {NBS} (only={only}).")
    nbs = {p: nbformat.read(p, as_version=4) for p in paths}
    titles = {p: title_of(nb, p.stem) for p, nb in nbs.items()}
    page = {p: ('index.html' if p.stem == 'index' else f'{p.stem}.html') for p in paths}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for p, nb in nbs.items():
        if run and not frontmatter(nb).get('skip_exec'): nb = execute(nb)  # skip_exec: as nbdev_test and nbdev_docs
        body, head = render_body(drop_title(process(nb)))
        nav = ''.join(f'<a href="{page[q]}"{" class=current" if q == p else ""}>{html.escape(titles[q][0])}</a>'
                      for q in paths if q.stem != 'index')
        dest = out / page[p]
        dest.write_text(PAGE.format(title=html.escape(titles[p][0]), subtitle=html.escape(titles[p][1]),
                                    nav=nav, body=body, head=head), encoding='utf-8')
        written.append(dest)
        print(f'wrote {dest.relative_to(out.parent) if out.parent in dest.parents else dest}')
    return written


def readme_text(nb: nbformat.NotebookNode) -> str:
    "README.md from the index notebook: markdown as is, code fenced, text outputs fenced."
    parts = ['<!-- Generated from nbs/index.ipynb by `python tools/build_docs.py readme`; edit the notebook. -->']
    prev = None
    for cell in process(nb).cells:
        if cell.cell_type == 'markdown': parts.append(cell.source.strip())
        elif cell.cell_type == 'code':
            if prev is not None and prev.cell_type == 'code' and not prev.get('outputs') and parts[-1].startswith(
                    '```python'):  # an import cell and the code after it (split for nbdev's docs): one block
                parts[-1] = parts[-1][:-len('\n```')] + f'\n\n{cell.source}\n```'
            else: parts.append(f'```python\n{cell.source}\n```')
            for o in cell.get('outputs', []):
                text = o.get('text') or o.get('data', {}).get('text/plain')
                if text: parts.append('```\n' + (''.join(text) if isinstance(text, list) else text).rstrip() + '\n```')
        prev = cell
    return '\n\n'.join(parts) + '\n'


def nbdev_prepare_docs() -> Path:
    """What `nbdev_docs` does before it calls quarto, run in the current folder (a checkout with settings.ini): the
    quarto files, the doc links, the sidebar, and the notebooks processed into `_proc` (show_doc cells executed).
    nbdev's own `nbdev_proc_nbs` first installs quarto when it is missing, with `sudo` and then `pip install -e` into
    whatever pip is on PATH; this leaves that step out."""
    from nbdev.config import get_config
    from nbdev.doclinks import _build_modidx
    from nbdev.quarto import nbdev_sidebar, refresh_quarto_yml
    from nbdev.serve import proc_nbs
    cfg = get_config()
    refresh_quarto_yml()
    _build_modidx()
    nbdev_sidebar.__wrapped__(path=cfg.nbs_path)
    proc_nbs(cfg.nbs_path)
    return cfg.config_path / '_proc'


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('site', help='render the notebooks to an HTML site')
    s.add_argument('--out', type=Path, default=ROOT / '_site')
    s.add_argument('--execute', action='store_true', help='run each notebook first (shows outputs)')
    s.add_argument('--only', nargs='*', help='notebook stems to render (default: all)')
    r = sub.add_parser('readme', help='write README.md from nbs/index.ipynb')
    r.add_argument('--check', action='store_true', help='fail if README.md is not up to date')
    sub.add_parser('nbdev-prep', help="nbdev_docs' steps before quarto (into _proc), without its quarto installer; run "
                                      "it in the folder of settings.ini")
    a = ap.parse_args(argv)
    if a.cmd == 'site':
        build_site(a.out, a.only, a.execute)
        return 0
    if a.cmd == 'nbdev-prep':
        print(f'processed the notebooks into {nbdev_prepare_docs()}')
        return 0
    text = readme_text(nbformat.read(NBS / 'index.ipynb', as_version=4))
    if a.check:
        if (ROOT / 'README.md').read_text(encoding='utf-8') != text:
            print('README.md is out of date with nbs/index.ipynb; run: python tools/build_docs.py readme',
                  file=sys.stderr)
            return 1
        print('README.md is up to date.')
        return 0
    (ROOT / 'README.md').write_text(text, encoding='utf-8')
    print('wrote README.md')
    return 0


if __name__ == '__main__':
    sys.exit(main())
