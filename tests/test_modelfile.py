"""Issue 19: model files without pickles (perturbdiff.modelfile). A fitted model saved to a folder is loaded in a fresh
process that never sees the training file and predicts the same cells, bit for bit; with `save(controls=False)` the
folder holds no cell at all and `load(controls=...)` takes the control cells back; the folder holds no perturbed
training cell; a DDIB model's folder is at most 1.5 times the size of its weights."""
import io
import json
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from perturbdiff.baselines import AdditiveBaseline, LinearBaseline
from perturbdiff.data import PerturbData
from perturbdiff.datasets import simulate
from perturbdiff.models import Departures, Doloris, Unlasting

warnings.filterwarnings('ignore', category=UserWarning)
TINY = {Unlasting: dict(steps=8, hidden=16, time_dim=8, decoder=(16,), grn_dim=4, sampling_steps=5, mask_steps=3),
        Doloris: dict(steps=8, hidden=16, time_dim=8, decoder=(16,), grn_dim=4, pca_dim=4, sampling_steps=5,
                      mask_steps=3),
        Departures: dict(steps=8, dim=4, time_dim=8, sampling_steps=5)}
KEYS = dict(cell_type_key='cell_type', mode_key='perturbation_type')
FRESH = """
import sys, numpy as np, anndata as ad
from perturbdiff.contract import model_class
name, folder, out = sys.argv[1:4]
controls = ad.read_h5ad(sys.argv[4]) if len(sys.argv) > 4 else None
model = model_class(name).load(folder, device='cpu', controls=controls)
np.save(out, np.asarray(model.predict(GROUPS, n_cells=5, seed=3).X))
"""


@pytest.fixture(scope='module')
def screen(tmp_path_factory):
    "A simulated screen with its cells shuffled (control rows are not the first rows), split into unseen pairs."
    sim = simulate(seed=4, n_genes=40, n_regulators=4, n_single=8, n_combo=4, cells_per_group=12, n_control=60,
                   n_cell_types=2)
    sim = sim[np.random.default_rng(0).permutation(sim.n_obs)].copy()
    split = PerturbData(sim, **KEYS).split('unseen_combo', seed=0)
    d = tmp_path_factory.mktemp('modelfile')
    controls = d / 'controls.h5ad'  # only control cells, as a user would hand them back
    sim[sim.obs['condition'].astype(str) == 'control'].copy().write_h5ad(controls)
    return split, d, controls


NAMES = {Unlasting: 'unlasting', Doloris: 'doloris', Departures: 'departures', AdditiveBaseline: 'additive',
         LinearBaseline: 'linear'}


def fresh_predict(name: str, folder, out, groups: list[str], controls=None) -> np.ndarray:
    "Load the folder in a new Python process (no training data there) and predict `groups`."
    code = FRESH.replace('GROUPS', repr(groups))
    argv = [sys.executable, '-c', code, name, str(folder), str(out)] + ([str(controls)] if controls else [])
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return np.load(out)


def stored_rows(folder) -> set[int]:
    "The row counts of the matrices a folder stores: 2-D tensors, and sparse matrices (kept as three 1-D arrays)."
    manifest = json.loads((folder / 'model.json').read_text())
    tensors = torch.load(folder / manifest['files']['tensors'], weights_only=True)
    state = (folder / manifest['files']['state']).read_text()
    sparse = {int(s) for s in re.findall(r'"@":"csr","id":\d+,"shape":\[(\d+),', state)}
    return {t.shape[0] for t in tensors.values() if t.ndim == 2} | sparse


@pytest.mark.parametrize('cls', list(NAMES), ids=lambda c: c.__name__)
def test_saved_model_predicts_the_same_cells_in_a_fresh_process(screen, cls):
    split, d, controls = screen
    model = (cls.from_preset('quick', seed=0, device='cpu', progress=False, **TINY[cls]) if cls in TINY
             else cls()).fit(split.train)
    groups = [f'{c},{t}' for c, t in split.test_groups[['condition', 'cell_type']].itertuples(index=False)]
    want = np.asarray(model.predict(groups, n_cells=5, seed=3).X)
    folder, bare = d / NAMES[cls], d / f'{NAMES[cls]}_bare'
    model.save(folder); model.save(bare, controls=False)
    assert np.array_equal(fresh_predict(NAMES[cls], folder, d / 'a.npy', groups), want)
    assert np.array_equal(fresh_predict(NAMES[cls], bare, d / 'b.npy', groups, controls), want)
    # what the folders hold: a manifest, a state and a tensor file; no pickle; the controls only where asked for
    manifest = json.loads((folder / 'model.json').read_text())
    n_ctrl, n_train = int(split.train.obs.control.sum()), split.train.n_cells
    assert manifest['controls'] == n_ctrl and json.loads((bare / 'model.json').read_text())['controls'] == 0
    assert manifest['genes'] == list(split.train.genes) and manifest['vocabulary'] == list(split.train.vocab)
    assert sorted(p.name.split('-')[0] for p in folder.iterdir()) == ['model.json', 'state', 'tensors']
    assert n_ctrl in stored_rows(folder) and n_train not in stored_rows(folder)  # the controls, not the training set
    assert n_ctrl not in stored_rows(bare)
    loaded = cls.load(folder, device='cpu')
    assert loaded.train_.n_cells == n_ctrl and loaded.train_.obs.control.all()
    with pytest.raises(ValueError, match='saved without its control cells'):
        cls.load(bare, device='cpu')


def test_folder_of_a_ddib_model_is_at_most_1_5_times_its_weights(tmp_path):
    "At the simulator's size and the quick preset: the folder (without and with the controls) against the weights."
    sim = simulate(seed=0)
    train = PerturbData(sim, **KEYS).split('unseen_combo', seed=0).train
    for cls in (Unlasting, Doloris):
        m = cls.from_preset('quick', seed=0, device='cpu', progress=False, steps=2, mask_steps=2).fit(train)
        nets = {'net': m.net_, **({'mask': m.mask_.net} if m.mask_ is not None else {})}
        buf = io.BytesIO(); torch.save({k: v.state_dict() for k, v in nets.items()}, buf)
        sizes = {}
        for controls in (False, True):
            m.save(tmp_path / f'{cls.__name__}{controls}', controls=controls)
            sizes[controls] = sum(f.stat().st_size for f in (tmp_path / f'{cls.__name__}{controls}').iterdir())
        ratio = {k: v / len(buf.getvalue()) for k, v in sizes.items()}
        print(f"{cls.__name__}: weights {len(buf.getvalue()) / 1e6:.2f} MB, folder / weights {ratio[False]:.2f} "
              f"without the controls, {ratio[True]:.2f} with them")
        assert ratio[False] <= ratio[True] <= 1.5


@pytest.mark.parametrize('cls', [Unlasting, Departures], ids=lambda c: c.__name__)
def test_a_model_file_without_the_newer_prediction_options_loads(screen, cls, tmp_path):
    """Model files written before `GRNBlock.cpu_batch_elements` and the DDIB option `pack_groups` (75e4046 and older)
    hold no value for them: such a file loads, takes the defaults and predicts the same cells. Checked once by hand with
    a file written at 75e4046; here the two keys are taken out of a new file's state."""
    split = screen[0]
    model = cls.from_preset('quick', seed=0, device='cpu', progress=False, **TINY[cls]).fit(split.train)
    groups = [f'{c},{t}' for c, t in split.test_groups[['condition', 'cell_type']].itertuples(index=False)]
    want = np.asarray(model.predict(groups, n_cells=5, seed=3).X)
    model.save(tmp_path / 'm')
    manifest = json.loads((tmp_path / 'm' / 'model.json').read_text())
    path = tmp_path / 'm' / manifest['files']['state']
    found, keys = [], ('cpu_batch_elements', 'pack_groups')
    def strip(v):  # an instance's attributes are [name, value] pairs in the state tree
        if isinstance(v, dict):
            for x in v.values(): strip(x)
        elif isinstance(v, list):
            found.extend(x[0] for x in v if isinstance(x, list) and len(x) == 2 and x[0] in keys)
            v[:] = [x for x in v if not (isinstance(x, list) and len(x) == 2 and x[0] in keys)]
            for x in v: strip(x)
    state = json.loads(path.read_text()); strip(state); path.write_text(json.dumps(state))
    assert 'cpu_batch_elements' in found and ('pack_groups' in found) == (cls is Unlasting)
    got = np.asarray(cls.load(tmp_path / 'm', device='cpu').predict(groups, n_cells=5, seed=3).X)
    assert np.array_equal(got, want)
