#!/usr/bin/env python
"""Offline documentation for perturbdiff, for machines without quarto.

`nbdev_docs` (which needs quarto) builds the full site where quarto exists. This script is the
fallback that works offline: it renders the notebooks in `nbs/` to a browsable HTML site, writes
README.md from `nbs/index.ipynb` (what `nbdev_readme` does with quarto), and runs nbdev's own docs
preparation without its quarto installer.

    python tools/build_docs.py site [--out _site] [--execute] [--only 00b_data index]
    python tools/build_docs.py readme [--check]
    python tools/build_docs.py nbdev-prep

Processing follows nbdev's conventions: cells marked `#| hide` are dropped, other `#|` directive
lines are removed from the code shown, the notebook's `# Title` and `> subtitle` become the page
heading. Exported cells become API cards (signature, docstring, the parameters' comments) with the
code folded beneath and highlighted; TeX (`$...$`, `$$...$$`) becomes MathML, which browsers draw
without a script or a CDN (latex2mathml, a dev requirement); each page has a sidebar, a search box
(over every page's text, `search_index.js`), its contents (h2/h3) and previous/next links; figures
are scaled to the column. With `--execute`, each notebook is first run (cwd = nbs/, as nbdev_test
does) so the pages show outputs; a notebook that fails gets a page that shows the error, the other
pages are still built, and the exit code is 1. Without it, the outputs saved in the notebooks are shown.
"""
from __future__ import annotations

import argparse
import copy
import html
import json
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
        if 'injected-parameters' in cell.metadata.get('tags', []): continue  # papermill's: the banner says them
        exported = False
        if cell.cell_type == 'code':
            d = directives(cell.source)
            if 'hide' in d or 'default_exp' in d and len(cell.source.strip().splitlines()) == 1: continue
            exported = bool({'export', 'exports'} & set(d))
            cell.source = '\n'.join(l for l in cell.source.splitlines() if not DIRECTIVE.match(l)).strip()
            if not cell.source and not cell.get('outputs'): continue
        cell.metadata = {'exported': True} if exported else {}
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


def _param_comments(src: str, fn) -> dict[str, str]:
    "nbdev's documentation comments: `name: type = default,  # what it is` on a parameter's own line."
    lines, out = src.splitlines(), {}
    args = fn.args
    for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
        if a is None: continue
        m = re.search(r'#\s*(.+)$', lines[a.lineno - 1]) if a.lineno - 1 < len(lines) else None
        if m and lines[a.lineno - 1].lstrip().startswith(a.arg): out[a.arg] = m.group(1).strip()
    return out


def _card(node, src: str, owner: str | None = None) -> str:
    "An API card: the signature, the docstring and the parameters' comments of a def or class."
    import ast
    esc = html.escape
    if isinstance(node, ast.ClassDef):
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == '__init__'), None)
        sig = re.sub(r'^self(: [^,]+)?(, )?', '', ast.unparse(init.args)) if init else ''
        fn, kind = init, 'class'
    else:
        fn, kind = node, 'def'
        args = node.args
        first = (args.posonlyargs + args.args)[:1]
        if owner is None and first and first[0].annotation is not None and first[0].arg == 'self':  # @patch
            owner = ast.unparse(first[0].annotation).strip("'")
        sig = ast.unparse(args)
        if first and first[0].arg in ('self', 'cls'): sig = re.sub(r'^(self|cls)(: [^,]+)?(, )?', '', sig)
    name = f'{owner}.{node.name}' if owner else node.name
    doc = ast.get_docstring(node) or (ast.get_docstring(fn) if fn is not None and fn is not node else '') or ''
    params = _param_comments(src, fn) if fn is not None else {}
    rows = ''.join(f'<tr><td><code>{esc(k)}</code></td><td>{esc(v)}</td></tr>' for k, v in params.items())
    return (f'<div class="card" id="{esc(name)}"><div class="sig"><span class="kw">{kind}</span> <b>{esc(name)}</b>'
            f'({esc(sig)})</div>' + (f'<p>{esc(doc)}</p>' if doc else '') +
            (f'<table class="params">{rows}</table>' if rows else '') + '</div>')


def api_cards(source: str) -> str:
    "HTML for an exported cell: a card per top-level def and class (methods of a class too), the code folded."
    import ast
    try: tree = ast.parse(source)
    except SyntaxError: tree = None
    cards = []
    for node in (tree.body if tree else []):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith('_'):
            cards.append(_card(node, source))
        elif isinstance(node, ast.ClassDef) and not node.name.startswith('_'):
            cards.append(_card(node, source))
            cards += [_card(m, source, node.name) for m in node.body
                      if isinstance(m, ast.FunctionDef) and not m.name.startswith('_')]
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer
    code = highlight(source, PythonLexer(), HtmlFormatter(cssclass='highlight'))
    label = 'source' if cards else 'exported code'
    return ''.join(cards) + f'<details class="source"><summary>{label}</summary>{code}</details>'


MATH = re.compile(r'\$\$(.+?)\$\$|(?<![\\$\w])\$(?=\S)([^$\n]+?)(?<=\S)\$(?![\w$])', re.S)
CODE_SPAN = re.compile(r'(```.*?```|`[^`\n]*`)', re.S)


def render_math(md: str, inserts: dict[str, str]) -> str:
    """TeX of a markdown cell (`$$...$$`, `$...$`) as MathML, which browsers draw without scripts or a CDN. The
    markdown gets a placeholder per formula and `inserts` its MathML (the markdown renderer would take MathML apart);
    code spans are left alone, and a formula latex2mathml cannot read stays as TeX in a code span."""
    try: from latex2mathml.converter import convert
    except ImportError: return md  # not installed: the TeX stays (the dev requirements have it)
    def one(m):
        tex, display = (m.group(1), 'block') if m.group(1) is not None else (m.group(2), 'inline')
        try: mathml = convert(tex.strip(), display=display).replace('\n', ' ')
        except Exception: return f'`{tex}`'
        key = f'PDMATH{len(inserts)}X'
        inserts[key] = mathml
        return key
    parts = CODE_SPAN.split(md)
    return ''.join(p if i % 2 else MATH.sub(one, p) for i, p in enumerate(parts))


def docs_cells(nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, dict[str, str]]:
    """Exported cells replaced by placeholders for their API cards (put in after nbconvert, which would escape them),
    markdown with its maths as MathML. Returns the notebook and {placeholder: card HTML}."""
    cards = {}
    for i, cell in enumerate(nb.cells):
        if cell.metadata.get('exported'):
            key = f'PDCARD{i}X'
            cards[key] = api_cards(cell.source)
            nb.cells[i] = nbformat.v4.new_markdown_cell(key)
        elif cell.cell_type == 'markdown': cell.source = render_math(cell.source, cards)
    return nb, cards


def put_cards(body: str, cards: dict[str, str]) -> str:
    "The cards in place of their placeholders (nbconvert wraps each in a paragraph, inside its cell's divs)."
    for key, card in sorted(cards.items(), key=lambda kv: -len(kv[0])):  # PDMATH12X before PDMATH1X
        body = re.sub(rf'<p>\s*{key}\s*</p>|{key}', lambda m: card, body, count=1)
    return body


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} – perturbdiff</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ margin: 0; font-family: system-ui, sans-serif; display: flex; line-height: 1.45; }}
nav {{ width: 260px; min-height: 100vh; background: #f4f6f8; padding: 1em; box-sizing: border-box; flex-shrink: 0; }}
nav a {{ display: block; padding: .25em 0; color: #1f4e79; text-decoration: none; font-size: .95em; }}
nav a.current {{ font-weight: bold; }}
nav input {{ width: 100%; box-sizing: border-box; padding: .3em; margin-bottom: .5em; }}
#hits a {{ font-size: .85em; }}
main {{ flex: 1; padding: 1.5em 2.5em; max-width: 1100px; min-width: 0; }}
aside {{ width: 220px; flex-shrink: 0; padding: 1.5em 1em; font-size: .85em; position: sticky; top: 0;
         align-self: flex-start; max-height: 100vh; overflow-y: auto; }}
aside a {{ display: block; color: #1f4e79; text-decoration: none; padding: .15em 0; }}
aside a.h3 {{ padding-left: 1em; }}
.subtitle {{ color: #555; font-size: 1.1em; margin-top: -.5em; }}
img, svg {{ max-width: 100%; height: auto; }}
.card {{ border: 1px solid #d0d7de; border-left: 4px solid #1f4e79; border-radius: 4px; padding: .5em .9em;
         margin: .8em 0; background: #fbfcfd; }}
.card .sig {{ font-family: ui-monospace, monospace; font-size: .92em; overflow-wrap: anywhere; }}
.card .kw {{ color: #8250df; }}
.card table.params td {{ border: none; padding: .1em .6em .1em 0; vertical-align: top; font-size: .9em; }}
details.source summary {{ cursor: pointer; color: #555; font-size: .85em; }}
.pager {{ display: flex; justify-content: space-between; margin-top: 3em; border-top: 1px solid #ddd;
          padding-top: 1em; }}
.failed {{ border: 2px solid #c0392b; background: #fdecea; padding: 1em; }}
math[display=block] {{ margin: .8em 0; }}
{pygments}
</style>{head}<script src="search_index.js" defer></script><script>{search_js}</script></head>
<body><nav><a href="index.html"><b>perturbdiff</b></a>
<input id="q" type="search" placeholder="Search" oninput="pdSearch(this.value)"><div id="hits"></div><hr>{nav}</nav>
<main><h1 class="page-title">{title}</h1><p class="subtitle">{subtitle}</p>{body}{pager}</main>
<aside><b>On this page</b>{toc}</aside></body></html>
"""

SEARCH_JS = """
function pdSearch(q) {
  const out = document.getElementById('hits'); out.innerHTML = '';
  q = (q || '').trim().toLowerCase(); if (q.length < 2 || typeof PD_PAGES === 'undefined') return;
  for (const p of PD_PAGES) {
    const i = p.text.toLowerCase().indexOf(q); if (i < 0) continue;
    const a = document.createElement('a'); a.href = p.page; a.className = 'hit';
    a.textContent = p.title + ': …' + p.text.slice(Math.max(0, i - 30), i + 50) + '…'; out.appendChild(a);
  }
}
window.addEventListener('DOMContentLoaded', () => {
  const q = new URLSearchParams(location.search).get('q');
  if (q) { document.getElementById('q').value = q; pdSearch(q); }
});
"""


def page_text(body: str) -> str:
    "The visible text of a page body (for the search index)."
    text = re.sub(r'<(script|style)[^>]*>.*?</\1>', ' ', body, flags=re.S)
    return re.sub(r'\s+', ' ', html.unescape(re.sub(r'<[^>]+>', ' ', text))).strip()


def toc_of(body: str) -> tuple[str, str]:
    "The body without nbconvert's `¶` anchor links, and the page's contents (its h2 and h3 headings)."
    body = re.sub(r'<a class="anchor-link"[^>]*>.*?</a>', '', body)
    items = [f'<a class="{lvl}" href="#{hid}">{html.escape(page_text(txt))}</a>'
             for lvl, hid, txt in re.findall(r'<(h[23]) id="([^"]+)"[^>]*>(.*?)</h[23]>', body, re.S)]
    return body, ''.join(items)


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


EXPERIMENT = re.compile(r'^2\d_')
SHARED_FILES = {'20_adamson': 'adamson_mini.h5ad', '21_norman': 'perturbench_devel.h5ad'}  # else the simulator
SYNTHETIC = {'22_sciplex3': 'synthetic-drug'}  # sci-Plex3 is not at hand offline: the drug simulator


def experiment_params(stem: str, out_dir: Path, extra: dict | None = None) -> dict:
    """The quick papermill parameters of an experiment notebook for the site: its development file from
    ../shared/data (or $PERTURBDIFF_SHARED_DATA) when present, else the simulator; `extra` overrides."""
    import os
    shared = Path(os.environ.get('PERTURBDIFF_SHARED_DATA', ROOT.parent / 'shared' / 'data'))
    p = dict(quick=True, out_dir=str(out_dir))
    if stem in SHARED_FILES:
        f = shared / SHARED_FILES[stem]
        p['data_path'] = str(f) if f.exists() else 'synthetic'
    elif stem in SYNTHETIC: p['data_path'] = SYNTHETIC[stem]
    return {**p, **(extra or {})}


def run_experiment(path: Path, out_dir: Path, params: dict) -> nbformat.NotebookNode:
    "Execute an experiment notebook with papermill (cwd = the repository, as the README's command) into `out_dir`."
    import papermill as pm
    out_dir.mkdir(parents=True, exist_ok=True)
    out_nb = out_dir / f'{path.stem}.out.ipynb'
    pm.execute_notebook(str(path), str(out_nb), parameters=params, cwd=str(ROOT), kernel_name='python3',
                        progress_bar=False)
    return nbformat.read(out_nb, as_version=4)


def with_banner(nb: nbformat.NotebookNode, text: str) -> nbformat.NotebookNode:
    "A markdown note right after the title cell (how the page's outputs were made)."
    i = next((k for k, c in enumerate(nb.cells) if c.cell_type == 'markdown' and re.search(r'^#\s', c.source, re.M)),
             -1)
    nb.cells.insert(i + 1, nbformat.v4.new_markdown_cell(text))
    return nb


def results_page(runs: dict[str, Path]) -> str:
    "The Results page body: each experiment's summary (every model against the baselines) and subgroup breakdown."
    import pandas as pd
    parts = ['<p>Generated from the experiment runs of this build (their summary tables as written); mean ± std over '
             'the test groups, lower is better except for <code>pcc_act</code>.</p>']
    for stem, out_dir in runs.items():
        for name, title in (('summary.txt', 'summary'), ('summary_by_subgroup.csv', 'by subgroup')):
            f = out_dir / name
            if not f.exists(): continue
            parts.append(f'<h2 id="{stem}-{title.replace(" ", "-")}"><a href="{stem}.html">{stem}</a>: {title}</h2>')
            if name.endswith('.csv'): parts.append(pd.read_csv(f).round(3).to_html(index=False, border=0))
            else: parts.append(f'<pre>{html.escape(f.read_text())}</pre>')
    if len(parts) == 1: parts.append('<p>No experiment wrote a summary in this build.</p>')
    return ''.join(parts)


def build_site(out: Path, only: list[str] | None = None, run: bool = False, experiments: bool = False,
               params: dict | None = None, paper: Path | None = None) -> list[Path]:
    """Render nbs/*.ipynb (or the `only` stems) to `out`; returns the pages written. A notebook that fails to run or
    render gets a page that says so (with the error), and the other pages are still built. With `experiments`, the
    experiment notebooks (2x) are run with their quick parameters (`experiment_params`, `params` overriding) and shown
    executed, with a Results page; with `paper`, an experiment's `<paper>/<stem>.out.ipynb` (a full-size run's output
    notebook) is shown instead when it exists, and the Results page reads its tables from `<paper>/<stem>/`."""
    import datetime
    from pygments.formatters import HtmlFormatter
    paths = sorted(NBS.glob('*.ipynb'))
    if only: paths = [p for p in paths if p.stem in set(only)]
    if not paths: raise SystemExit(f"No notebooks to render in {NBS} (only={only}).")
    nbs = {p: nbformat.read(p, as_version=4) for p in paths}
    titles = {p: title_of(nb, p.stem) for p, nb in nbs.items()}
    page = {p: ('index.html' if p.stem == 'index' else f'{p.stem}.html') for p in paths}
    order = sorted(paths, key=lambda p: (p.stem != 'index', p.stem))
    out.mkdir(parents=True, exist_ok=True)
    pygments_css = HtmlFormatter().get_style_defs('.highlight')
    written, index, failed, runs = [], [], [], {}
    def nav_html(current: Path | None) -> str:
        links = ''.join(f'<a href="{page[q]}"{" class=current" if q == current else ""}>{html.escape(titles[q][0])}</a>'
                        for q in paths if q.stem != 'index')
        return links + ('<a href="results.html"><b>Results</b></a>' if experiments else '')
    for p, nb in nbs.items():
        try:
            full = paper / f'{p.stem}.out.ipynb' if paper else None
            if experiments and EXPERIMENT.match(p.stem) and full is not None and full.exists():
                nb = with_banner(nbformat.read(full, as_version=4), f'**Outputs of the full-size run** `{full}`.')
                if (paper / p.stem).is_dir(): runs[p.stem] = paper / p.stem  # its tables, for the Results page
            elif experiments and EXPERIMENT.match(p.stem):
                prm = experiment_params(p.stem, out / 'experiments' / p.stem, params)
                when = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
                runs[p.stem] = Path(prm['out_dir'])
                nb = with_banner(run_experiment(p, runs[p.stem], prm), f'**Executed** {when} with papermill, '
                                 'parameters ' + ', '.join(f'`{k}={v!r}`' for k, v in prm.items() if k != 'out_dir'))
            elif run and not frontmatter(nb).get('skip_exec'): nb = execute(nb)  # skip_exec: as nbdev_test and docs
            cells, cards = docs_cells(drop_title(process(nb)))
            body, head = render_body(cells)
            body = put_cards(body, cards)
        except Exception as e:  # noqa: BLE001 (one failing notebook must not take the site down)
            failed.append(p.stem)
            body, head = (f'<div class="failed"><b>This page failed to build</b> ({html.escape(type(e).__name__)}):'
                          f'<pre>{html.escape(str(e)[-3000:])}</pre></div>'), ''
        body, toc = toc_of(body)
        nav = nav_html(p)
        k = order.index(p)
        link = lambda q, text: f'<a href="{page[q]}">{text}</a>'
        prev = link(order[k - 1], '← ' + html.escape(titles[order[k - 1]][0])) if k > 0 else '<span></span>'
        nxt = link(order[k + 1], html.escape(titles[order[k + 1]][0]) + ' →') if k + 1 < len(order) else ''
        dest = out / page[p]
        dest.write_text(PAGE.format(title=html.escape(titles[p][0]), subtitle=html.escape(titles[p][1]),
                                    nav=nav, body=body, head=head, toc=toc,
                                    pager=f'<div class="pager">{prev}{nxt}</div>', pygments=pygments_css,
                                    search_js=SEARCH_JS), encoding='utf-8')
        index.append(dict(page=page[p], title=titles[p][0], text=page_text(body)))
        written.append(dest)
        print(f'wrote {dest.relative_to(out.parent) if out.parent in dest.parents else dest}')
    if experiments:
        body, toc = toc_of(results_page(runs))
        dest = out / 'results.html'
        dest.write_text(PAGE.format(title='Results', subtitle='Every model against every baseline, on the data at hand',
                                    nav=nav_html(None), body=body, head='', toc=toc, pager='',
                                    pygments='', search_js=SEARCH_JS), encoding='utf-8')
        index.append(dict(page='results.html', title='Results', text=page_text(body)))
        written.append(dest)
    (out / 'search_index.js').write_text('const PD_PAGES = ' + json.dumps(index) + ';\n', encoding='utf-8')
    if failed: print(f'{len(failed)} page(s) failed to build: {failed}', file=sys.stderr)
    build_site.failed = failed
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
    s.add_argument('--experiments', action='store_true',
                   help='run the experiment notebooks (2x) with their quick parameters and add a Results page')
    s.add_argument('--param', action='append', default=[], metavar='KEY=VALUE',
                   help='an experiment parameter for every experiment notebook (a Python literal, else a string)')
    s.add_argument('--paper', type=Path, help="folder of a full-size run: output notebooks <stem>.out.ipynb and their "
                                             "tables in <stem>/ (the notebooks' out_dir)")
    r = sub.add_parser('readme', help='write README.md from nbs/index.ipynb')
    r.add_argument('--check', action='store_true', help='fail if README.md is not up to date')
    sub.add_parser('nbdev-prep', help="nbdev_docs' steps before quarto (into _proc), without its quarto installer; run "
                                      "it in the folder of settings.ini")
    a = ap.parse_args(argv)
    if a.cmd == 'site':
        import ast
        def value(v):
            try: return ast.literal_eval(v)
            except (ValueError, SyntaxError): return v
        params = {k: value(v) for k, _, v in (x.partition('=') for x in a.param)}
        build_site(a.out, a.only, a.execute, a.experiments, params, a.paper)
        return 1 if build_site.failed else 0
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
