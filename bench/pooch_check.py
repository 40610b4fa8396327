"""Why perturbdiff keeps its own downloader instead of `pooch.retrieve` (issue 19): the download faults of
tests/test_faults_download.py, served from the same loopback server (tests/conftest.py), fetched once with pooch and
once with `perturbdiff.datasets.download`.

    pip install pooch && python bench/pooch_check.py

Cases: a good file; half a file without Content-Length, then the connection closed (the client cannot tell it was cut);
half a file after announcing the full length. For each: what is in the cache afterwards, and whether a second call with
a good URL downloads again (a cached truncated file that is reused is a poisoned cache). The registry's GEARS files have
no published checksum, so pooch runs with `known_hash=None`, as it would for them.
"""
import functools
import http.server
import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))
from conftest import LoopbackHandler  # noqa: E402

import pooch  # noqa: E402

from perturbdiff.datasets import DownloadError, download  # noqa: E402

warnings.filterwarnings('ignore')
pooch.get_logger().setLevel('ERROR')


def main() -> None:
    root = Path(tempfile.mkdtemp()); www = root / 'www'; www.mkdir()
    data = os.urandom(200_000); (www / 'f.h5ad').write_bytes(data)
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(LoopbackHandler, directory=str(www)))
    srv.gets = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f'http://127.0.0.1:{srv.server_address[1]}'
    print(f'pooch {pooch.__version__}; a {len(data):,}-byte file\n')
    print('| case | downloader | first call | cached afterwards | second call (good URL) |\n|---|---|---|---|---|')
    for case, label in (('', 'good file'), ('nolength/', 'half, no Content-Length'),
                        ('truncated/', 'half, Content-Length of the whole')):
        for who in ('pooch.retrieve', 'perturbdiff download'):
            cache = root / f'{who.split()[0]}-{case.strip("/") or "good"}'
            cache.mkdir()
            try:
                if who == 'pooch.retrieve':
                    pooch.retrieve(f'{base}/{case}f.h5ad', known_hash=None, fname='f.h5ad', path=cache,
                                   progressbar=False)
                else:  # the verify hook stands for the h5ad check (here: the whole file must have come)
                    def whole(p):
                        if p.stat().st_size != len(data): raise DownloadError('not the whole file')
                    download(f'{base}/{case}f.h5ad', cache / 'f.h5ad', progress=False, verify=whole)
                first = 'returned'
            except Exception as e: first = f'raised {type(e).__name__}'
            f = cache / 'f.h5ad'
            cached = f'{f.stat().st_size:,} bytes' if f.exists() else 'nothing'
            n = len(srv.gets)
            if who == 'pooch.retrieve':
                pooch.retrieve(f'{base}/f.h5ad', known_hash=None, fname='f.h5ad', path=cache, progressbar=False)
            elif not f.exists(): download(f'{base}/f.h5ad', f, progress=False)
            again = ('downloaded' if len(srv.gets) > n else 'reused the cache') + f', {f.stat().st_size:,} bytes'
            print(f'| {label} | {who} | {first} | {cached} | {again} |')
    srv.shutdown()


if __name__ == '__main__':
    main()
