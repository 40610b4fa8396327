"""The offline docs: tools/build_docs.py renders the home page, library notebooks and an experiment notebook, the pages
have their titles, sidebar, API cards, MathML maths, contents, pager and search; a failing notebook fails its page
only; `--experiments` shows executed experiments and a Results page; README.md comes from nbs/index.ipynb; nbdev's
docs preparation runs offline; and headless Chromium renders the pages to screenshots that show the content
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

PAGES = ['index', '00b_data', '02_metrics', '14_reliability', '21_norman']


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


def visible(page: Path) -> str:
    "The text a reader sees: no tags, scripts or styles."
    text = re.sub(r'<(script|style)[^>]*>.*?</\1>', ' ', page.read_text(), flags=re.S)
    return html.unescape(re.sub(r'<[^>]+>', ' ', text))


def test_maths_cards_contents_and_pager(site):
    "TeX becomes MathML (no `$$` left); exported code becomes API cards with the code folded; contents and pager."
    page = (site / '02_metrics.html').read_text()
    assert page.count('<math') > 10 and '$' not in visible(site / '02_metrics.html')
    card = re.search(r'<div class="card" id="energy_distance">(.*?)</div><details', page, re.S).group(1)
    assert 'squared' in card and 'E-distance between cell sets X and Y' in card
    assert '<details class="source">' in page and '¶' not in visible(site / '02_metrics.html')
    assert '<aside><b>On this page</b><a class="h2" href="#Input-matrices">' in page
    assert re.search(r'<div class="pager"><a href="00b_data.html">← .*?</a><a href="14_reliability.html">', page)
    assert 'max-width: 100%' in page and '.highlight' in page  # figures fit the column; code is highlighted


def test_search_finds_a_function(site, chromium):
    "The search box, in headless Chromium: `?q=energy_distance` lists the metrics page among the hits."
    assert 'energy_distance' in (site / 'search_index.js').read_text()
    p = subprocess.run([chromium, *screenshot_docs.FLAGS, '--dump-dom',
                        (site / 'index.html').as_uri() + '?q=energy_distance'],
                       capture_output=True, text=True, timeout=120)
    hits = re.search(r'<div id="hits">(.*?)</div>', p.stdout, re.S).group(1)
    assert 'href="02_metrics.html"' in hits


def test_a_failing_notebook_fails_its_page_only(tmp_path, monkeypatch):
    "With --execute, a notebook that raises gets a page that says so; the other pages are built, the exit code is 1."
    import nbformat
    nbs = tmp_path / 'nbs'; nbs.mkdir()
    for stem, code in (('01_good', 'x = 1 + 1\nx'), ('02_bad', "raise ValueError('boom in a cell')")):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f'# {stem}'),
                                             nbformat.v4.new_code_cell(code)])
        nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
        nbformat.write(nb, nbs / f'{stem}.ipynb')
    monkeypatch.setattr(build_docs, 'NBS', nbs)
    assert build_docs.main(['site', '--execute', '--out', str(tmp_path / 'site')]) == 1
    assert build_docs.build_site.failed == ['02_bad']
    assert 'failed to build' in visible(tmp_path / 'site' / '02_bad.html')
    assert 'boom in a cell' in visible(tmp_path / 'site' / '02_bad.html')
    good = visible(tmp_path / 'site' / '01_good.html')
    assert '2' in good and 'failed' not in good


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
    code = screenshot_docs.main([str(site), '--pages', 'index.html', '02_metrics.html', '21_norman.html', '--out',
                                 str(tmp_path)])
    assert code == 0
    for stem in ('index', '02_metrics', '21_norman'):
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


def test_experiment_pages_are_executed_with_a_results_page(tmp_path, chromium):
    """`site --experiments`: an experiment notebook run by papermill with its quick parameters (the baselines here) on
    the data at hand, shown with its tables and figures and the parameters and date; a Results page gathers the
    summaries; headless Chromium renders both."""
    out = tmp_path / 'site'
    code = build_docs.main(['site', '--only', '20_adamson', '--experiments', '--param', 'models=control,additive',
                            '--param', 'data_path=synthetic', '--out', str(out)])
    assert code == 0 and build_docs.build_site.failed == []
    page = (out / '20_adamson.html').read_text()
    assert '<table' in page and page.count('<img') >= 3 and 'data:image/png;base64' in page
    assert 'Executed' in visible(out / '20_adamson.html') and "models='control,additive'" in visible(
        out / '20_adamson.html')
    results = visible(out / 'results.html')
    assert 'additive' in results and 'control' in results and 'edist' in results
    assert 'href="results.html"' in page
    assert screenshot_docs.main([str(out), '--pages', '20_adamson.html', 'results.html', '--out',
                                 str(tmp_path / 'shots')]) == 0


def test_paper_outputs_replace_the_quick_run(tmp_path):
    """`site --experiments --paper DIR`: an experiment whose full-size output notebook is in DIR is shown from it (not
    run again), with a banner naming it, and the Results page reads that run's tables from DIR/<stem>/."""
    import papermill as pm
    paper = tmp_path / 'gpu'
    paper.mkdir()
    pm.execute_notebook(str(ROOT / 'nbs' / '20_adamson.ipynb'), str(paper / '20_adamson.out.ipynb'),
                        parameters=dict(data_path='synthetic', models='control,mean', device='cpu',
                                        out_dir=str(paper / '20_adamson')), cwd=str(ROOT), kernel_name='python3',
                        progress_bar=False)
    out = tmp_path / 'site'
    assert build_docs.main(['site', '--only', '20_adamson', '--experiments', '--paper', str(paper), '--out',
                            str(out)]) == 0
    text = visible(out / '20_adamson.html')
    assert 'Outputs of the full-size run' in text and 'Executed' not in text
    assert not (out / 'experiments').exists()  # nothing was run for the site
    results = visible(out / 'results.html')
    assert 'mean' in results and 'No experiment wrote a summary' not in results


def test_norman_experiment_page(tmp_path, chromium, shared):
    """Issue 17's must-show: the Norman experiment page, executed on the development file (its Norman part; the
    baselines here), has its table and figures, and renders in headless Chromium to a screenshot."""
    out = tmp_path / 'site'
    assert build_docs.main(['site', '--only', '21_norman', '--experiments', '--param',
                            'models=control,mean,additive,linear', '--out', str(out)]) == 0
    assert build_docs.build_site.failed == []
    page = (out / '21_norman.html').read_text()
    assert '<table' in page and page.count('data:image/png;base64') >= 5
    text = visible(out / '21_norman.html')
    assert 'perturbench_devel.h5ad' in text and 'edist_authors' in text  # the data used, both conventions
    assert screenshot_docs.main([str(out), '--pages', '21_norman.html', '--out', str(tmp_path / 'shots')]) == 0
    assert (tmp_path / 'shots' / '21_norman.png').stat().st_size > 10_000
