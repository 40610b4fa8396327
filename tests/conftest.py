"""Shared pytest fixtures: the ../shared data folder (skipped with a reason when absent) and flags."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get('PERTURBDIFF_SHARED_DATA', ROOT.parent / 'shared' / 'data'))


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', default=False, help='run tests marked slow')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--runslow'): return
    skip = pytest.mark.skip(reason='slow: run with --runslow')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)


@pytest.fixture(scope='session')
def shared():
    "Path of ../shared/data; tests that need it skip where it is absent (a user's fresh clone)."
    if not SHARED.exists():
        pytest.skip(f'real-data fixtures not found at {SHARED} (set PERTURBDIFF_SHARED_DATA); '
                    'the simulator covers the same code paths')
    return SHARED


@pytest.fixture(autouse=True)
def _numba_cache(tmp_path_factory, monkeypatch):
    "A persistent numba cache keeps scanpy's JIT from recompiling in every process."
    monkeypatch.setenv('NUMBA_CACHE_DIR', str(ROOT / '.numba_cache'))
