"""The notebook test cells that read ../shared/data (`if HAVE_SHARED:`) run as no-ops in nbdev_test on a fresh clone,
where the folder is absent. This test makes that visible: it skips, naming the cells and files, where the folder is
absent, and where it is present checks that every file those cells read is there (so none of them is skipped by a
folder that exists without its files)."""
import json
import re

import pytest

from conftest import ROOT, SHARED


def shared_cells() -> dict[str, list[str]]:
    "Notebook -> the files under SHARED read by its `if HAVE_SHARED:` cells."
    out = {}
    for nb in sorted((ROOT / 'nbs').glob('*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        src = [
            ''.join(c['source']) for c in cells if c['cell_type'] == 'code' and 'if HAVE_SHARED' in ''.join(c['source'])
        ]
        if src: out[nb.stem] = sorted({f for s in src for f in re.findall(r"SHARED / '([^']+)'", s)})
    return out


def test_shared_data_cells():
    cells = shared_cells()
    assert cells.get('00b_data'), '00b_data reads the development file in its HAVE_SHARED cells'
    files = sorted({f for fs in cells.values() for f in fs})
    if not SHARED.exists():
        pytest.skip(f"the notebook cells behind `if HAVE_SHARED:` in {', '.join(cells)} need {', '.join(files)} in "
                    f"{SHARED} (set PERTURBDIFF_SHARED_DATA); nbdev_test ran them as no-ops")
    missing = [f for f in files if not (SHARED / f).exists()]
    assert not missing, f"{SHARED} lacks {missing}, which the notebooks' HAVE_SHARED cells read"
