"""The offline docs: tools/build_docs.py renders the home page, a library notebook and an experiment
notebook (no execution), the pages have their titles and the sidebar; README.md comes from
nbs/index.ipynb; and headless Chromium renders the pages to screenshots that show the content
(tools/screenshot_docs.py; skipped where Chromium is not installed)."""
import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tools'))
import build_docs  # noqa: E402
import screenshot_docs  # noqa: E402

PAGES = ['index', '00b_data', '14_reliability', '21_norman']


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    if not (ROOT / 'nbs' / 'index.ipynb').exists(): pytest.skip('nbs/index.ipynb is not written yet')
    out = tmp_path_factory.mktemp('site')
    p = subprocess.run([sys.executable, str(ROOT / 'tools' / 'build_docs.py'), 'site', '--only', *PAGES, '--out',
                        str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return out


def h1(page: Path) -> str:
    return html.unescape(re.search(r'<h1 class="page-title">(.*?)</h1>', page.read_text()).group(1))


def test_pages(site):
    for stem in PAGES:
        assert (site / ('index.html' if stem == 'index' else f'{stem}.html')).exists(), stem
    assert h1(site / 'index.html') == 'perturbdiff'
    assert h1(site / '00b_data.html').startswith('Data')
    assert h1(site / '21_norman.html') == 'Norman: unseen double-gene perturbations'
    assert (
        '<title>Norman: unseen double-gene perturbations – perturbdiff</title>' in (site / '21_norman.html').read_text()
    )


def test_nav_and_content(site):
    for page in site.glob('*.html'):
        text = page.read_text()
        nav = re.search(r'<nav>(.*?)</nav>', text, re.S).group(1)
        assert all(f'href="{h}"' in nav for h in ('index.html', '00b_data.html', '21_norman.html')), page.name
        assert '#| ' not in text  # directives are not shown
    text_of = lambda stem: html.unescape(re.sub(r'<[^>]+>', '', (site / f'{stem}.html').read_text()))
    data = text_of('00b_data')
    assert 'from fastcore.test import' not in data  # `#| hide` cells are dropped
    assert 'class PerturbData' in data
    norman = text_of('21_norman')
    assert 'skip_exec' not in norman  # nbdev front matter is not content
    assert 'data_path' in norman and 'perturbdiff benchmark' in norman


def test_frontmatter_and_readme():
    import nbformat
    nb = lambda stem: nbformat.read(ROOT / 'nbs' / f'{stem}.ipynb', as_version=4)
    assert build_docs.frontmatter(nb('21_norman')) == {'skip_exec': True}
    assert build_docs.frontmatter(nb('00b_data')) == {}
    if not (ROOT / 'nbs' / 'index.ipynb').exists(): pytest.skip('nbs/index.ipynb is not written yet')
    text = build_docs.readme_text(nb('index'))
    assert text.startswith('<!-- Generated from nbs/index.ipynb') and '# perturbdiff' in text
    assert '<!-- ci:main -->' in text and '<!-- ci:test -->' in text
    assert '```python' in text and '#| ' not in text


@pytest.fixture(scope='module')
def chromium():
    path = screenshot_docs.find_chromium()
    if not path: pytest.skip('Chromium is not installed (Debian: apt-get install chromium); screenshots not checked')
    return path


def test_screenshots(site, chromium, tmp_path):
    "The home page and an experiment page render in headless Chromium and show their content."
    code = screenshot_docs.main([str(site), '--pages', 'index.html', '21_norman.html', '--out', str(tmp_path)])
    assert code == 0
    for stem in ('index', '21_norman'):
        assert (tmp_path / f'{stem}.png').stat().st_size > 10_000


def test_blank_page_fails(chromium, tmp_path):
    "The checker is not fooled by a page with a title but nothing on screen."
    page = tmp_path / 'blank.html'
    page.write_text('<!doctype html><html><head><title>Blank</title></head><body></body></html>')
    rep = screenshot_docs.check_page(chromium, page, tmp_path)
    assert rep['title_in_dom'] and not rep['ok'] and rep['std'] < screenshot_docs.MIN_STD


def test_nbdev_docs_preparation_runs_without_quarto(tmp_path):
    """nbdev_docs' steps before quarto (`tools/build_docs.py nbdev-prep`: nbdev's `nbdev_proc_nbs` without its quarto
    installer) on a copy of the notebooks. They execute the cells that show_doc needs (export cells and every cell with
    an import), so a cell that mixed imports with code using earlier names failed here (NameError in 00b_data).
    Imports now stand alone: no failure and no nbdev warning."""
    import shutil
    for f in ('settings.ini', 'setup.py'): shutil.copy2(ROOT / f, tmp_path / f)
    shutil.copytree(ROOT / 'nbs', tmp_path / 'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints', '_proc'))
    p = subprocess.run([sys.executable, str(ROOT / 'tools' / 'build_docs.py'), 'nbdev-prep'], cwd=tmp_path,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'Found cells containing imports and other code' not in p.stderr, p.stderr[-3000:]
    assert 'sudo' not in p.stdout + p.stderr  # nbdev's quarto installer did not run
    proc = tmp_path / '_proc'
    assert {q.name for q in (ROOT / 'nbs').glob('*.ipynb')} <= {q.name for q in proc.glob('*.ipynb')}
    assert 'html-math-method: katex' in (proc / '_quarto.yml').read_text()  # ours, not nbdev's default
    assert '02ab_modelfile.ipynb' in (tmp_path / 'nbs' / 'sidebar.yml').read_text()
