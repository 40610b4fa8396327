"""Download faults against a loopback HTTP server: the dataset cache (issue #14 item 6) and the GO GAF cache (#13).

Nothing here touches the internet: every file is served from a temporary folder on 127.0.0.1.
"""
import dataclasses
import gzip
import socket
from pathlib import Path

import pytest

from perturbdiff import datasets as D
from perturbdiff import priors as P


@pytest.fixture()
def server(loopback):
    "The loopback server of conftest.py: (folder served, base URL, GET log)."
    yield loopback


def dead_url(name='x'):
    "A loopback URL where nothing listens."
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return f'http://127.0.0.1:{port}/{name}'


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob('*') if p.is_file())


@pytest.fixture(scope='module')
def h5ad_bytes(tmp_path_factory):
    "An scPerturb-style sci-Plex3 h5ad (the registry's one plain-h5ad entry)."
    sim = D.simulate(kind='drug', n_drugs=3, n_genes=30, cells_per_group=4, n_control=10, seed=4)
    a = sim.copy()
    a.obs = a.obs.rename(columns={'condition': 'perturbation', 'dose': 'dose_value', 'cell_type': 'cell_line'})
    del a.uns['simulation']
    path = tmp_path_factory.mktemp('h5') / 'sciplex3.h5ad'
    a.write_h5ad(path)
    return path.read_bytes()


# ---------------------------------------------------------------- datasets: issue #14 item 6

def test_truncated_h5ad_without_content_length_is_not_cached(server, tmp_path, h5ad_bytes):
    "The poisoning case: half an h5ad, no Content-Length. It must fail, leave nothing, and not block a retry."
    www, base, gets = server
    (www / 'sciplex3.h5ad').write_bytes(h5ad_bytes)
    cache = tmp_path / 'cache'
    with pytest.raises(D.DownloadError, match=r'failed verification.*(?s:.*)nothing was cached.*call again') as e:
        D.fetch('sciplex3', cache=cache, url=f'{base}/nolength/sciplex3.h5ad', progress=False)
    assert 'HDF5' in str(e.value)  # says what failed
    assert files(cache) == []  # no h5ad, no recorded hash, no .part file
    path = D.fetch('sciplex3', cache=cache, url=f'{base}/sciplex3.h5ad', progress=False)  # the retry succeeds
    assert path.read_bytes() == h5ad_bytes
    assert (cache / 'sciplex3' / (path.name + '.sha256')).read_text().strip() == D.sha256sum(path)
    assert D.load_anndata('sciplex3', cache=cache, progress=False).n_obs > 0


def test_poisoned_cache_from_an_earlier_version_is_removed(server, tmp_path, h5ad_bytes):
    "A truncated h5ad cached with its own hash recorded (what the old code did) is detected and removed."
    www, base, gets = server
    (www / 'sciplex3.h5ad').write_bytes(h5ad_bytes)
    folder = tmp_path / 'sciplex3'
    folder.mkdir()
    bad = folder / D.REGISTRY['sciplex3'].filename
    bad.write_bytes(h5ad_bytes[: len(h5ad_bytes) // 2])
    (folder / (bad.name + '.sha256')).write_text(D.sha256sum(bad) + '\n')
    with pytest.raises(D.DownloadError, match='damaged and has been removed'):
        D.fetch('sciplex3', cache=tmp_path, progress=False)
    assert files(folder) == []
    assert D.fetch('sciplex3', cache=tmp_path, url=f'{base}/sciplex3.h5ad', progress=False).read_bytes() == h5ad_bytes


@pytest.mark.parametrize('pin', ['size', 'sha256'])
def test_pinned_size_or_checksum_mismatch(server, tmp_path, h5ad_bytes, monkeypatch, pin):
    "A registry entry that pins size or sha256 rejects another file, naming expected and got; nothing is cached."
    www, base, gets = server
    (www / 'sciplex3.h5ad').write_bytes(h5ad_bytes)
    wrong = dict(size=len(h5ad_bytes) + 1) if pin == 'size' else dict(sha256='ab' * 32)
    monkeypatch.setitem(D.REGISTRY, 'sciplex3', dataclasses.replace(D.REGISTRY['sciplex3'], **wrong))
    with pytest.raises(D.DownloadError) as e:
        D.fetch('sciplex3', cache=tmp_path, url=f'{base}/sciplex3.h5ad', progress=False)
    msg = str(e.value)
    if pin == 'size': assert f'{len(h5ad_bytes)} bytes, expected {len(h5ad_bytes) + 1}' in msg
    else: assert f"got sha256 {D.sha256sum(www / 'sciplex3.h5ad')}, expected {'ab' * 32}" in msg
    assert files(tmp_path / 'sciplex3') == []
    right = dict(size=len(h5ad_bytes)) if pin == 'size' else dict(sha256=D.sha256sum(www / 'sciplex3.h5ad'))
    monkeypatch.setitem(D.REGISTRY, 'sciplex3', dataclasses.replace(D.REGISTRY['sciplex3'], **right))
    assert D.fetch('sciplex3', cache=tmp_path, url=f'{base}/sciplex3.h5ad', progress=False).exists()


def test_pinned_size_checked_on_a_cached_file(server, tmp_path, h5ad_bytes, monkeypatch):
    "A file placed in the cache by hand is held to the pinned size too."
    folder = tmp_path / 'sciplex3'
    folder.mkdir()
    (folder / D.REGISTRY['sciplex3'].filename).write_bytes(h5ad_bytes)
    monkeypatch.setitem(D.REGISTRY, 'sciplex3', dataclasses.replace(D.REGISTRY['sciplex3'], size=len(h5ad_bytes) - 1))
    with pytest.raises(D.DownloadError, match=rf'{len(h5ad_bytes)} bytes, expected {len(h5ad_bytes) - 1}'):
        D.fetch('sciplex3', cache=tmp_path, progress=False)
    assert files(folder) == []


def test_good_file_is_cached_and_reused_without_a_second_download(server, tmp_path, h5ad_bytes):
    www, base, gets = server
    (www / 'sciplex3.h5ad').write_bytes(h5ad_bytes)
    first = D.fetch('sciplex3', cache=tmp_path, url=f'{base}/sciplex3.h5ad', progress=False)
    assert gets == ['/sciplex3.h5ad']
    second = D.fetch('sciplex3', cache=tmp_path, url=f'{base}/sciplex3.h5ad', progress=False)
    assert second == first and gets == ['/sciplex3.h5ad']  # no second GET
    assert files(tmp_path / 'sciplex3') == [first.name, first.name + '.sha256']


def test_zip_whose_member_is_not_an_anndata(server, tmp_path):
    "A sound zip whose h5ad member does not open: nothing extracted, the archive and its hash removed."
    import zipfile
    www, base, gets = server
    with zipfile.ZipFile(www / 'adamson.zip', 'w') as z:
        z.writestr('adamson/perturb_processed.h5ad', b'\x89HDF\r\n\x1a\n' + b'\0' * 100)
    with pytest.raises(D.DownloadError, match=r'adamson/perturb_processed.h5ad.*HDF5'):
        D.fetch('adamson', cache=tmp_path, url=f'{base}/adamson.zip', progress=False)
    assert files(tmp_path / 'adamson') == []


def test_download_verify_hook_runs_before_the_file_is_moved(server, tmp_path):
    "download(verify=...) sees the .part file; a failure leaves no destination and no recorded hash."
    www, base, gets = server
    (www / 'f.txt').write_bytes(b'hello')
    seen, dest = [], tmp_path / 'dest' / 'f.txt'
    def verify(p):
        seen.append((p.name, p.exists(), dest.exists()))
        raise D.DownloadError('not what we wanted.')
    with pytest.raises(D.DownloadError, match='not what we wanted'):
        D.download(f'{base}/f.txt', dest, progress=False, verify=verify)
    assert seen and '.part-' in seen[0][0] and seen[0][1] and not seen[0][2]
    assert files(dest.parent) == []
    assert D.download(f'{base}/f.txt', dest, progress=False, verify=lambda p: None).read_bytes() == b'hello'
    assert files(dest.parent) == ['f.txt', 'f.txt.sha256']


# ---------------------------------------------------------------- GO GAF: issue #13

GAF = '\n'.join([
    '!gaf-version: 2.2',
    '!date-generated: 2024-06-17T02:00',
    '\t'.join(['UniProtKB', 'P1', 'GENEA', 'enables', 'GO:0000001', 'PMID:1', 'IDA', '', 'F', 'gene A', 'OLDA',
               'protein', 'taxon:9606', '20200101', 'UniProt', '', '']),
    '\t'.join(['UniProtKB', 'P2', 'GENEB', 'enables', 'GO:0000001', 'PMID:1', 'IDA', '', 'F', 'gene B', '', 'protein',
               'taxon:9606', '20200101', 'UniProt', '', '']),
    '\t'.join(['UniProtKB', 'P2', 'GENEB', 'NOT|enables', 'GO:0000009', 'PMID:1', 'IDA', '', 'F', 'gene B', '',
               'protein', 'taxon:9606', '20200101', 'UniProt', '', '']),
]) + '\n'


@pytest.fixture()
def go_env(tmp_path, monkeypatch, server):
    "An empty cache, no org.Hs.eg.db, and the GAF URL pointing at the loopback server."
    www, base, gets = server
    (www / 'goa_human.gaf.gz').write_bytes(gzip.compress(GAF.encode()))
    monkeypatch.delenv('PERTURBDIFF_GO_DB', raising=False)
    monkeypatch.setenv('PERTURBDIFF_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setenv('PERTURBDIFF_GO_URL', f'{base}/goa_human.gaf.gz')
    return www, base, gets, tmp_path / 'cache' / 'go'


def test_gaf_fetched_parsed_cached_and_reused_offline(go_env, monkeypatch):
    www, base, gets, folder = go_env
    ont = P.read_go()  # nothing cached: the GAF is fetched, verified, parsed and cached
    assert ont.kind == 'GAF' and gets == ['/goa_human.gaf.gz']
    assert ont.terms('GENEB') == {'GO:0000001'} and ont.terms('OLDA') == {'GO:0000001'}  # NOT row dropped; alias
    raw = P.gaf_cache_path(f'{base}/goa_human.gaf.gz')
    names = files(folder)
    assert raw.name in names and raw.name + '.sha256' in names
    assert sum(n.endswith('.tsv.gz') for n in names) == 2 and not any('.part-' in n for n in names)
    (www / 'goa_human.gaf.gz').unlink()  # the server has nothing any more: only the cache can answer
    def no_parse(*a, **k): raise AssertionError('the parsed cache should have been used')
    monkeypatch.setattr(P, 'parse_gaf', no_parse)
    again = P.read_go()
    assert gets == ['/goa_human.gaf.gz']  # no second request
    assert again.annotations.equals(ont.annotations) and again.label == ont.label


@pytest.mark.parametrize('fault', ['nolength', 'truncated'])
def test_truncated_gaf_download_leaves_no_cache_file(go_env, monkeypatch, fault):
    www, base, gets, folder = go_env
    (www / 'goa_human.gaf.gz').write_bytes(gzip.compress((GAF * 200).encode()))
    url = f'{base}/{fault}/goa_human.gaf.gz'
    with pytest.raises(P.GOUnavailableError, match='failed verification|cut short') as e:
        P.fetch_gaf(url)
    assert 'call again' in str(e.value) or 'Try again' in str(e.value)
    assert files(folder) == []  # neither the GAF, nor its hash, nor a parsed table, nor a .part file
    assert P.read_go(f'{base}/goa_human.gaf.gz').terms('GENEA') == {'GO:0000001'}  # a good download then works


def test_go_offline_error_says_what_to_do(go_env, monkeypatch):
    www, base, gets, folder = go_env
    url = dead_url('goa_human.gaf.gz')
    monkeypatch.setenv('PERTURBDIFF_GO_URL', url)
    dest = P.gaf_cache_path(url)
    with pytest.raises(FileNotFoundError) as e:
        P.read_go()
    msg = str(e.value)
    for hint in (url, str(dest), 'tools/fetch_go_db.sh', "go('/path/to/goa_human.gaf.gz')", 'coexpression()'):
        assert hint in msg, hint
    assert '\n' not in msg and files(folder) == []
    with pytest.raises(P.GOUnavailableError, match='download=False') as e:
        P.read_go(download=False)
    assert str(dest) in str(e.value) and gets == []
    with pytest.warns(UserWarning, match='tools/fetch_go_db.sh'):
        assert P.go_if_available() is None


def test_hand_placed_gaf_is_used_and_a_damaged_one_removed(go_env, monkeypatch):
    www, base, gets, folder = go_env
    url = dead_url('goa_human.gaf.gz')
    monkeypatch.setenv('PERTURBDIFF_GO_URL', url)
    dest = P.gaf_cache_path(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    good = gzip.compress(GAF.encode())
    dest.write_bytes(good[: len(good) // 2])  # a broken copy where the error message said to put it
    with pytest.raises(P.GOUnavailableError, match='damaged and has been removed'):
        P.read_go()
    assert not dest.exists()
    dest.write_bytes(good)
    src = P.go_if_available(k=5)
    assert src is not None and src.ontology().terms('GENEA') == {'GO:0000001'} and gets == []
