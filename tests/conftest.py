"""Shared pytest fixtures: the ../shared data folder (skipped with a reason when absent), flags, a loopback HTTP
server."""
import functools
import http.server
import threading
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


@pytest.fixture(scope='session')
def tiny_h5ad(tmp_path_factory) -> Path:
    """A tiny simulated CRISPRi screen (40 genes, 6 singles, 3 pairs, one cell type, seed 1) written once; tests only
    read it."""
    from perturbdiff import datasets
    path = tmp_path_factory.mktemp('tiny') / 'tiny.h5ad'
    datasets.simulate(n_genes=40, n_regulators=5, n_cell_types=1, n_single=6, n_combo=3, cells_per_group=15,
                      n_control=60, seed=1).write_h5ad(path)
    return path


@pytest.fixture(autouse=True)
def _numba_cache(tmp_path_factory, monkeypatch):
    "A persistent numba cache keeps scanpy's JIT from recompiling in every process."
    monkeypatch.setenv('NUMBA_CACHE_DIR', str(ROOT / '.numba_cache'))


class LoopbackHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder and counts GETs. Fault paths:
    /nolength/<file>: half the file, no Content-Length, then close (the client cannot tell it was cut);
    /truncated/<file>: announces the full length, sends half and closes."""
    def log_message(self, *a): pass

    def do_GET(self):
        self.server.gets.append(self.path)
        for prefix in ('/nolength/', '/truncated/'):
            if self.path.startswith(prefix):
                data = (Path(self.directory) / self.path[len(prefix):]).read_bytes()
                self.send_response(200)
                if prefix == '/truncated/': self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
        super().do_GET()


@pytest.fixture()
def loopback(tmp_path):
    "A local HTTP server for download tests (no network): (folder served, base URL, list of GET paths)."
    www = tmp_path / 'www'
    www.mkdir()
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(LoopbackHandler, directory=str(www)))
    srv.gets = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield www, f'http://127.0.0.1:{srv.server_address[1]}', srv.gets
    srv.shutdown()
    srv.server_close()
