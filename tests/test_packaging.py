"""The package as `pip install perturbdiff` gets it: the sdist builds from a copy of the checkout and carries what
setup.py reads; the wheel (built from that sdist) has the license, the development status settings.ini intends and
the PyPI description; installed on its own it imports, runs the PyPI example and offers the GO fetch command.
Everything is built in a temporary folder: nothing lands in the checkout."""
import configparser
import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_ini = configparser.ConfigParser(delimiters=['='])
_ini.read(ROOT / 'settings.ini', encoding='utf-8')
CFG = _ini['DEFAULT']
NAME, VERSION = CFG['lib_name'], CFG['version']
PYPI_README = 'PYPI.md'  # the long description on PyPI (README.md is the developers' page)
SKIP_DIRS = {'.git', '.venv', 'venv', '__pycache__', 'build', 'dist', '.pytest_cache', '.numba_cache', '_docs', '_site',
             '_proc', 'results', 'out', '.ipynb_checkpoints'}


def source_files() -> list[str]:
    "The files a CI checkout has: git's tracked and untracked-but-not-ignored files, else the tree minus build outputs."
    if (ROOT / '.git').exists() and shutil.which('git'):
        p = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'], cwd=ROOT,
                           capture_output=True, text=True, check=True)
        return [f for f in p.stdout.split('\0') if f and (ROOT / f).is_file()]
    return [str(f.relative_to(ROOT)) for f in ROOT.rglob('*') if f.is_file()
            and not SKIP_DIRS & set(f.relative_to(ROOT).parts) and not f.name.endswith(('.egg-info', '.pyc'))]


def run(cmd, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', PIP_DISABLE_PIP_VERSION_CHECK='1', **kw.pop('env', {}))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, **kw)
    assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """sdist and wheel of a copy of the checkout (`python -m build` makes the wheel from the sdist), and the wheel
    installed."""
    tmp = tmp_path_factory.mktemp('packaging')
    src = tmp / 'src'
    for f in source_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    before = sorted(p.name for p in ROOT.iterdir())
    try: import build  # noqa: F401  (a dev requirement)
    except ImportError: build = None
    if build is not None:  # sdist, then the wheel from the unpacked sdist: proves the sdist is self-sufficient
        run([sys.executable, '-m', 'build', '--no-isolation', '--outdir', str(tmp / 'dist'), str(src)], cwd=tmp)
    else:
        run([sys.executable, 'setup.py', '-q', 'sdist', '-d', str(tmp / 'dist'), 'bdist_wheel', '-d',
             str(tmp / 'dist')], cwd=src)
    assert sorted(p.name for p in ROOT.iterdir()) == before  # no build/, dist/ or *.egg-info in the checkout
    sdist, = (tmp / 'dist').glob(f'{NAME}-{VERSION}.tar.gz')
    wheel, = (tmp / 'dist').glob(f'{NAME}-{VERSION}-py3-none-any.whl')
    site = tmp / 'site'
    run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index', '--target', str(site), str(wheel)],
        cwd=tmp)
    return dict(tmp=tmp, src=src, sdist=sdist, wheel=wheel, site=site)


def test_sdist_carries_what_setup_py_reads(built):
    with tarfile.open(built['sdist']) as t: names = {n.split('/', 1)[1] for n in t.getnames() if '/' in n}
    for f in ('setup.py', 'settings.ini', 'pyproject.toml', 'MANIFEST.in', 'LICENSE', 'README.md', PYPI_README):
        assert f in names, f"{f} missing from the sdist"
    modules = {str(p.relative_to(built['src'])) for p in (built['src'] / NAME).glob('*.py')}
    assert modules and modules <= names, sorted(modules - names)
    assert not [n for n in names if '__pycache__' in n or n.endswith('.pyc')]


def wheel_metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        info = f'{NAME}-{VERSION}.dist-info/'
        meta = email.parser.Parser().parsestr(z.read(info + 'METADATA').decode())
        return meta, z.namelist(), z.read(info + 'entry_points.txt').decode()


def test_wheel_metadata_is_the_pypi_face(built):
    meta, names, entry_points = wheel_metadata(built['wheel'])
    classifiers = meta.get_all('Classifier')
    assert 'Apache' in (meta.get('License-Expression') or meta.get('License') or ''), meta.items()
    assert (
        'License :: OSI Approved :: Apache Software License' in classifiers
        or meta.get('License-Expression') == 'Apache-2.0'
    )
    assert any(n.endswith('.dist-info/licenses/LICENSE') or n.endswith('.dist-info/LICENSE') for n in names)
    status = [c for c in classifiers if c.startswith('Development Status :: ')]
    # not off by one
    assert len(status) == 1 and status[0].startswith(f"Development Status :: {CFG['status']} - "), status
    description = meta.get_payload().strip()
    assert description == (ROOT / PYPI_README).read_text(encoding='utf-8').strip()
    assert meta['Description-Content-Type'].startswith('text/markdown')
    assert '../shared' not in description and 'pip install perturbdiff' in description
    assert not re.search(r'\]\((?!https?://|#)', description), 'relative links break on PyPI'
    assert meta['Requires-Python'] == f">={CFG['min_python']}" and meta['Version'] == VERSION
    assert 'perturbdiff = perturbdiff.cli:main' in entry_points


def installed(built, *args: str, **kw) -> subprocess.CompletedProcess:
    "Run python from the temporary folder with only the installed wheel (not the checkout) providing perturbdiff."
    return run([sys.executable, *args], cwd=built['tmp'], env=dict(PYTHONPATH=str(built['site'])), **kw)


def test_installed_wheel_imports_and_runs_the_pypi_example(built):
    p = installed(built, '-c', 'import perturbdiff; print(perturbdiff.__version__); print(perturbdiff.__file__)')
    version, where = p.stdout.split()
    assert version == VERSION and Path(where).is_relative_to(built['site'])
    example = re.search(r'```python\n(.*?)```', (ROOT / PYPI_README).read_text(encoding='utf-8'), re.S).group(1)
    p = installed(built, '-c',
                  'import perturbdiff; assert perturbdiff.__file__.startswith(%r)\n' % str(built['site']) + example)
    assert 'additive' in p.stdout


def test_installed_wheel_offers_the_go_fetch_command(built):
    "The GO error tells pip users to run this; tools/fetch_go_db.sh is not in the wheel."
    _, names, _ = wheel_metadata(built['wheel'])
    assert not [n for n in names if n.startswith('tools/')]
    p = installed(built, '-m', f'{NAME}.priors', 'fetch-go', '--help')
    assert '--cache' in p.stdout and '--url' in p.stdout and 'Warning' not in p.stderr


def test_installed_console_script_runs(built):
    """`perturbdiff --help` through the console script that pip generated from the wheel's entry point, with only the
    wheel (not the checkout) providing perturbdiff; the dependencies come from this environment."""
    script = built['site'] / 'bin' / 'perturbdiff'
    assert script.is_file(), sorted(p.name for p in (built['site'] / 'bin').iterdir())
    p = run([str(script), '--help'], cwd=built['tmp'], env=dict(PYTHONPATH=str(built['site'])))
    assert p.stdout.startswith('usage: perturbdiff') and 'benchmark' in p.stdout and 'scale' in p.stdout
    p = run([str(script), 'predict', '--help'], cwd=built['tmp'], env=dict(PYTHONPATH=str(built['site'])))
    assert '--smiles' in p.stdout and '--threads' in p.stdout
