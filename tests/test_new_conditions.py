"""Issue 19: a fitted model predicts perturbations that are not in the data it was trained on (as GEARS'
`predict([['A', 'B']])`): a new pair of trained genes, a measured gene never perturbed, and a new drug given by its
SMILES, from the Python API and the command line; a gene the model's graph does not know is refused by name."""
import warnings

import numpy as np
import pytest

from perturbdiff.baselines import AdditiveBaseline, LinearBaseline
from perturbdiff.cli import main
from perturbdiff.data import PerturbData
from perturbdiff.datasets import simulate
from perturbdiff.models import Departures, Doloris, Unlasting

warnings.filterwarnings('ignore', category=UserWarning)
TINY = {Unlasting: dict(steps=8, hidden=16, time_dim=8, decoder=(16,), grn_dim=4, sampling_steps=5),
        Doloris: dict(steps=8, hidden=16, time_dim=8, decoder=(16,), grn_dim=4, pca_dim=4, sampling_steps=5),
        Departures: dict(steps=8, dim=4, time_dim=8, sampling_steps=5)}


@pytest.fixture(scope='module')
def screen():
    sim = simulate(seed=2, n_genes=40, n_regulators=4, n_single=8, n_combo=3, cells_per_group=12, n_control=60,
                   n_cell_types=1)
    split = PerturbData(sim, cell_type_key='cell_type', mode_key='perturbation_type').split(
        'unseen_combo', test_frac=1.0, seed=0)
    train = split.train
    singles = [c for c in train.conditions if '+' not in c and c in set(train.genes)]
    pair = next(f'{a}+{b}' for i, a in enumerate(singles) for b in singles[i + 1:]
                if f'{a}+{b}' not in set(train.vocab) and f'{b}+{a}' not in set(train.vocab))
    fresh = next(g for g in train.genes if g not in set(train.targets))  # measured, never perturbed
    return sim, split, pair, fresh


@pytest.mark.parametrize('cls', [Unlasting, Doloris, Departures, AdditiveBaseline, LinearBaseline],
                         ids=lambda c: c.__name__)
def test_predict_conditions_not_in_the_data(screen, cls):
    sim, split, pair, fresh = screen
    train = split.train
    assert pair not in train.vocab and fresh not in train.vocab
    model = (cls.from_preset('quick', seed=0, device='cpu', progress=False, **TINY[cls]) if cls in TINY
             else cls()).fit(train)
    pred = model.predict([pair, fresh], n_cells=6, seed=0)
    assert pred.n_obs == 12 and np.isfinite(np.asarray(pred.X)).all()
    assert list(pred.obs['condition'].astype(str).unique()) == [pair, fresh]
    a, b = (np.asarray(pred.X)[(pred.obs['condition'] == c).to_numpy()].mean(0) for c in (pair, fresh))
    assert np.abs(a - b).max() > 1e-4  # the targets reach the prediction: two conditions, two predictions
    again = model.predict([fresh, pair], n_cells=6, seed=0)  # the same cells whatever the order asked in
    assert np.array_equal(np.asarray(again.X)[6:], np.asarray(pred.X)[:6])
    with pytest.raises(ValueError, match='NOTAGENE'):
        model.predict([f'{pair.split("+")[0]}+NOTAGENE'], n_cells=3)


def test_cli_predicts_a_new_pair(screen, tmp_path):
    sim, split, pair, fresh = screen
    path = tmp_path / 'screen.h5ad'
    sim.write_h5ad(path)
    argv = ['--data', path, '--cell-type-key', 'cell_type', '--mode-key', 'perturbation_type', '--split',
            'unseen_combo', '--test-frac', '1']
    assert main(['fit', *argv, '--model', 'additive', '--out', tmp_path / 'run', '--quiet']) == 0
    assert main(['predict', '--run', tmp_path / 'run', '--test', f'{pair},type0', '--test', fresh, '--n-cells', '5',
                 '--out', tmp_path / 'p.h5ad', '--quiet']) == 0
    import anndata as ad
    p = ad.read_h5ad(tmp_path / 'p.h5ad')
    assert sorted(p.obs['condition'].astype(str).unique()) == sorted([pair, fresh]) and p.n_obs == 10


def test_predict_shows_progress_per_group(screen, capsys):
    "A trained model's predict reports its groups on stderr (progress=True), a few lines when stderr is a log."
    sim, split, pair, fresh = screen
    m = Departures.from_preset('quick', seed=0, device='cpu', progress=False, **TINY[Departures]).fit(split.train)
    m.progress = True
    m.predict([pair, fresh], n_cells=3)
    err = capsys.readouterr().err
    assert 'departures predict' in err and '2/2' in err and len(err.replace('\r', '\n').splitlines()) <= 4
    m.progress = False
    m.predict([pair], n_cells=3)
    assert capsys.readouterr().err == ''


@pytest.fixture(scope='module')
def drug_screen(tmp_path_factory):
    "A simulated drug screen (SMILES in obs) and a SMILES of a drug that is not in it (caffeine)."
    sim = simulate(kind='drug', n_drugs=4, n_genes=30, n_cell_types=1, cells_per_group=8, n_control=40, seed=3)
    data = PerturbData(sim, cell_type_key='cell_type', dose_key='dose', smiles_key='SMILES', kind='drug').fit_scale()
    return sim, data, 'CN1C=NC2=C1C(=O)N(C(=O)N2C)C'


@pytest.mark.parametrize('cls', [Unlasting, Departures], ids=lambda c: c.__name__)
def test_a_new_drug_by_its_smiles(drug_screen, cls, tmp_path):
    "A drug outside the data, given by its SMILES, is predicted at a dose; a gene model or a taken name is refused."
    sim, data, caffeine = drug_screen
    model = cls.from_preset('quick', seed=0, device='cpu', progress=False, **TINY[cls]).fit(data)
    ct, dose = data.cell_types[0], float(data.obs.dose[~data.obs.control].iloc[0])
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        model.predict([f'caffeine,{ct},{dose}'], n_cells=4)
    assert model.add_drugs({'caffeine': caffeine}) == ['caffeine']
    pred = model.predict([f'caffeine,{ct},{dose}', f'{data.conditions[0]},{ct},{dose}'], n_cells=4, seed=0)
    assert pred.n_obs == 8 and np.isfinite(np.asarray(pred.X)).all()
    assert list(pred.obs['condition'].astype(str).unique()) == ['caffeine', data.conditions[0]]
    a, b = (np.asarray(pred.X)[(pred.obs['condition'] == c).to_numpy()].mean(0) for c in ('caffeine',
                                                                                           data.conditions[0]))
    assert np.abs(a - b).max() > 1e-4
    model.save(tmp_path / 'm')  # the new drug is part of the saved model
    groups = [f'caffeine,{ct},{dose}', f'{data.conditions[0]},{ct},{dose}']  # the same groups: the same cells
    again = cls.load(tmp_path / 'm', device='cpu').predict(groups, n_cells=4, seed=0)
    assert np.array_equal(np.asarray(again.X), np.asarray(pred.X))
    with pytest.raises(ValueError, match='already a drug of the model'):
        model.add_drugs({data.conditions[0]: caffeine})
    with pytest.raises(ValueError, match='Invalid SMILES'):
        model.add_drugs({'bad': 'not a smiles'})


def test_cli_predicts_a_new_drug(drug_screen, tmp_path):
    "`predict --smiles DRUG=SMILES` with a trained model; a baseline, which learns no drug features, is refused."
    sim, data, caffeine = drug_screen
    path = tmp_path / 'drugs.h5ad'
    sim.write_h5ad(path)
    keys = ['--data', path, '--cell-type-key', 'cell_type', '--dose-key', 'dose', '--smiles-key', 'SMILES', '--kind',
            'drug', '--split', 'ood_drug', '--test-frac', '0.25']
    sets = [a for k, v in TINY[Departures].items() for a in ('--set', f'{k}={v}')]
    assert main(['fit', *keys, '--model', 'departures', *sets, '--out', tmp_path / 'run', '--device', 'cpu',
                 '--quiet']) == 0
    ct, dose = data.cell_types[0], float(data.obs.dose[~data.obs.control].iloc[0])
    assert main(['predict', '--run', tmp_path / 'run', '--smiles', f'caffeine={caffeine}', '--test',
                 f'caffeine,{ct},{dose}', '--n-cells', '3', '--out', tmp_path / 'p.h5ad', '--quiet']) == 0
    import anndata as ad
    assert list(ad.read_h5ad(tmp_path / 'p.h5ad').obs['condition'].astype(str)) == ['caffeine'] * 3
    assert main(['fit', *keys, '--model', 'mean', '--out', tmp_path / 'mean', '--quiet']) == 0
    with pytest.raises(SystemExit) as e:
        main(['predict', '--run', tmp_path / 'mean', '--smiles', f'caffeine={caffeine}', '--test',
              f'caffeine,{ct},{dose}', '--out', tmp_path / 'q.h5ad', '--quiet'])
    assert e.value.code == 2


@pytest.mark.parametrize('cls', [Unlasting, Doloris, Departures], ids=lambda c: c.__name__)
def test_drug_embeddings_table(drug_screen, cls, tmp_path):
    """Issue 16: any per-drug embedding table (the papers: Uni-Mol) stands in for the Morgan fingerprints in every
    model: its rows (keyed by name or by SMILES) are the model's drug features; a drug it lacks is refused by name; a
    new drug is added from the same table; the model file keeps the table's rows."""
    import pandas as pd
    sim, data, caffeine = drug_screen
    drugs = [c for c in data.vocab if c not in ('control',) and c in data.smiles]
    rng = np.random.default_rng(0)
    vecs = pd.DataFrame(rng.normal(size=(len(drugs) + 1, 6)).astype(np.float32),
                        index=[data.smiles[drugs[0]]] + drugs[1:] + ['caffeine'])  # the first drug by its SMILES
    vecs.to_csv(tmp_path / 'emb.csv')
    model = cls.from_preset('quick', seed=0, device='cpu', progress=False, drug_embeddings=str(tmp_path / 'emb.csv'),
                            **TINY[cls]).fit(data)
    table = model.table_ if hasattr(model, 'table_') else model.cond_.table
    for i, d in enumerate(table.vocab):  # each drug's features are its row of the table
        want = vecs.loc[data.smiles[d] if d == drugs[0] else d].to_numpy() if d in drugs else np.zeros(6)
        assert np.allclose(table.features[i].numpy(), want), d
    ct, dose = data.cell_types[0], float(data.obs.dose[~data.obs.control].iloc[0])
    assert model.add_drugs({'caffeine': caffeine}) == ['caffeine']  # its row of the table, by name
    pred = model.predict([f'caffeine,{ct},{dose}', f'{drugs[0]},{ct},{dose}'], n_cells=4, seed=0)
    assert np.isfinite(np.asarray(pred.X)).all()
    model.save(tmp_path / 'm')
    again = cls.load(tmp_path / 'm', device='cpu').predict([f'caffeine,{ct},{dose}', f'{drugs[0]},{ct},{dose}'],
                                                          n_cells=4, seed=0)  # the same groups: the same cells
    assert np.array_equal(np.asarray(again.X), np.asarray(pred.X))
    with pytest.raises(KeyError, match=r"no row in the embedding table .*'%s'" % drugs[1]):
        cls.from_preset('quick', seed=0, device='cpu', progress=False, drug_embeddings=vecs.drop(index=drugs[1]),
                        **TINY[cls]).fit(data)


def test_cli_drug_embeddings(drug_screen, tmp_path):
    "`--drug-embeddings FILE` (NPZ here) replaces the SMILES for the trained models; a missing file is refused."
    sim, data, _ = drug_screen
    path = tmp_path / 'drugs.h5ad'
    sim.write_h5ad(path)
    drugs = sorted(data.smiles)
    np.savez(tmp_path / 'emb.npz', names=np.array(drugs), vectors=np.random.default_rng(1).normal(size=(len(drugs), 5)))
    keys = ['--data', path, '--cell-type-key', 'cell_type', '--dose-key', 'dose', '--kind', 'drug', '--split',
            'ood_drug', '--test-frac', '0.25', '--models', 'departures,mean', '--quiet']  # no --smiles-key
    sets = [a for k, v in TINY[Departures].items() for a in ('--set', f'{k}={v}')]
    assert main(['benchmark', *keys, *sets, '--drug-embeddings', tmp_path / 'emb.npz', '--out', tmp_path / 'b']) == 0
    import pandas as pd
    assert list(pd.unique(pd.read_csv(tmp_path / 'b' / 'results.csv').model)) == ['departures', 'mean']
    with pytest.raises(SystemExit) as e:
        main(['benchmark', *keys, *sets, '--drug-embeddings', tmp_path / 'nope.npz', '--out', tmp_path / 'c'])
    assert e.value.code == 2
