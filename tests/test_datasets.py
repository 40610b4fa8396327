"""The dataset loaders against a loopback HTTP server: success, cache, and every failure path."""
import socket
import zipfile
from pathlib import Path

import pytest

from perturbdiff import datasets as D
from perturbdiff.data import PerturbData


@pytest.fixture()
def server(loopback):
    "The loopback server of conftest.py (it also serves /truncated/<file>): (folder served, base URL)."
    www, url, _ = loopback
    yield www, url


def gears_zip(adata, name, folder):
    "A GEARS-style archive <name>.zip holding <name>/perturb_processed.h5ad."
    h5 = folder / f'{name}.h5ad'
    adata.write_h5ad(h5)
    with zipfile.ZipFile(folder / f'{name}.zip', 'w', zipfile.ZIP_DEFLATED) as z:
        z.write(h5, f'{name}/perturb_processed.h5ad')
    return folder / f'{name}.zip'


@pytest.fixture(scope='module')
def gears_sim():
    return D.simulate(gears_style=True, n_cell_types=1, n_genes=60, n_single=6, n_combo=0, cells_per_group=10,
                      n_control=30, seed=3)


def leftovers(cache):
    return sorted(p.name for p in Path(cache).rglob('*') if p.is_file() and '.part-' in p.name)


def test_download_verify_cache(server, tmp_path, gears_sim):
    www, base = server
    gears_zip(gears_sim, 'adamson', www)
    cache = tmp_path / 'cache'
    data = D.load('adamson', cache=cache, url=f'{base}/adamson.zip', progress=False)
    assert isinstance(data, PerturbData) and data.n_cells == gears_sim.n_obs
    assert data.kind == 'gene' and set(data.obs['mode'][~data.obs.control]) == {'knockdown'}
    rec = cache / 'adamson' / 'adamson.zip.sha256'
    assert rec.read_text().strip() == D.sha256sum(cache / 'adamson' / 'adamson.zip')
    (www / 'adamson.zip').unlink()  # the cache is used: the server no longer has the file
    assert D.load('adamson', cache=cache, progress=False).n_cells == gears_sim.n_obs
    assert leftovers(cache) == []


def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv('PERTURBDIFF_CACHE', str(tmp_path / 'envcache'))
    assert D.cache_dir() == tmp_path / 'envcache' and (tmp_path / 'envcache').is_dir()
    assert D.cache_dir(tmp_path / 'arg') == tmp_path / 'arg'


def test_unreachable_server(tmp_path):
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(D.DownloadError, match=r'Could not download .*save it as'):
        D.fetch('adamson', cache=tmp_path, url=f'http://127.0.0.1:{port}/adamson.zip', progress=False, timeout=5)
    assert not (tmp_path / 'adamson' / 'adamson.zip').exists() and leftovers(tmp_path) == []


def test_truncated_transfer(server, tmp_path, gears_sim):
    www, base = server
    gears_zip(gears_sim, 'adamson', www)
    with pytest.raises(D.DownloadError, match='cut short|Could not download'):
        D.fetch('adamson', cache=tmp_path, url=f'{base}/truncated/adamson.zip', progress=False, timeout=10)
    assert not (tmp_path / 'adamson' / 'adamson.zip').exists() and leftovers(tmp_path) == []


def test_truncated_file_served_whole(server, tmp_path, gears_sim):
    "A complete transfer of a damaged archive fails verification and leaves nothing in the cache."
    www, base = server
    z = gears_zip(gears_sim, 'adamson', www)
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    with pytest.raises(D.DownloadError, match='not a complete zip'):
        D.fetch('adamson', cache=tmp_path, url=f'{base}/adamson.zip', progress=False)
    assert not (tmp_path / 'adamson' / 'adamson.zip').exists()


def test_missing_member(server, tmp_path, gears_sim):
    www, base = server
    gears_zip(gears_sim, 'wrongname', www)
    (www / 'wrongname.zip').rename(www / 'adamson.zip')
    with pytest.raises(D.DownloadError, match='does not contain adamson/perturb_processed.h5ad'):
        D.fetch('adamson', cache=tmp_path, url=f'{base}/adamson.zip', progress=False)


def test_checksum_mismatch(server, tmp_path, gears_sim):
    www, base = server
    gears_zip(gears_sim, 'adamson', www)
    with pytest.raises(D.DownloadError, match='Checksum mismatch'):
        D.fetch('adamson', cache=tmp_path, url=f'{base}/adamson.zip', sha256='0' * 64, progress=False)
    assert not (tmp_path / 'adamson' / 'adamson.zip').exists() and leftovers(tmp_path) == []
    good = D.sha256sum(www / 'adamson.zip')
    assert D.fetch('adamson', cache=tmp_path, url=f'{base}/adamson.zip', sha256=good, progress=False).exists()


def test_tampered_cache_is_detected(server, tmp_path, gears_sim):
    www, base = server
    gears_zip(gears_sim, 'adamson', www)
    D.fetch('adamson', cache=tmp_path, url=f'{base}/adamson.zip', progress=False)
    cached = tmp_path / 'adamson' / 'adamson.zip'
    gears_zip(gears_sim[:20].copy(), 'adamson', tmp_path)  # a different, valid archive in place of the cached one
    (tmp_path / 'adamson.zip').replace(cached)
    with pytest.raises(D.DownloadError, match='damaged and has been removed'):
        D.fetch('adamson', cache=tmp_path, progress=False)
    assert not cached.exists()


def test_unknown_dataset():
    with pytest.raises(KeyError, match='Unknown dataset'):
        D.fetch('nonexistent')


def test_sciplex3_loader_with_smiles(server, tmp_path):
    "An scPerturb-style h5ad (counts, perturbation/dose_value/cell_line) served plain, SMILES joined from a table."
    www, base = server
    sim = D.simulate(kind='drug', n_drugs=4, n_genes=50, cells_per_group=8, n_control=20, seed=4)
    a = sim.copy()
    a.X = a.layers['counts'].copy()
    del a.layers['counts']
    a.obs = a.obs.rename(columns={'condition': 'perturbation', 'dose': 'dose_value', 'cell_type': 'cell_line'})
    a.obs = a.obs.drop(columns='SMILES')
    a.write_h5ad(www / 'sciplex3.h5ad')
    table = sim.uns['simulation']['perturbations']['smiles'].reset_index()
    with pytest.raises(ValueError, match='No SMILES for 1 drugs'):
        D.load('sciplex3', cache=tmp_path, url=f'{base}/sciplex3.h5ad', smiles=table.iloc[1:], progress=False)
    data = D.load('sciplex3', cache=tmp_path, smiles=table, progress=False)
    assert data.kind == 'drug' and data.input_space == 'counts'
    assert 'normalize_total(target_sum=10000)' in data.preprocessing
    assert data.perturbation('drug01').smiles == (table.set_index('condition').loc['drug01', 'smiles'],)
    assert sorted(set(data.obs.dose[~data.obs.control])) == [10.0, 100.0, 1000.0, 10000.0]


def test_sciplex3_smiles_csv(shared):
    "The real sci-Plex3 drug table parses: 188 drugs with SMILES."
    table = D.read_smiles_table(shared / 'sciplex3_drugs_smiles.csv')
    assert len(table) == 188 and all(isinstance(s, str) and s for s in table.values())
