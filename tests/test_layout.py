"""The code's layout (issue 15): notebook numbers are the import order, and there is no import circle."""
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / 'perturbdiff'
KNOWN = set()  # every module imports only lower-numbered ones


def imports():
    "{module: (notebook stem, {imported package module: at module level?})} from the exported sources."
    out = {}
    for f in sorted(PKG.glob('*.py')):
        if f.name.startswith('_'): continue
        text = f.read_text(encoding='utf-8')
        nb = re.search(r'File to edit: \.\./nbs/(\S+)\.ipynb', text)
        deps = {}
        for m in re.finditer(r'^( *)from (?:\.|perturbdiff\.)(\w+) import', text, re.M):
            if m.group(2) != f.stem: deps[m.group(2)] = deps.get(m.group(2), False) or not m.group(1)
        out[f.stem] = (nb.group(1) if nb else None, deps)
    return out


def test_no_module_imports_a_higher_numbered_one():
    mods = imports()
    late = {(m, d) for m, (nb, deps) in mods.items() for d in deps if nb and mods[d][0] and mods[d][0] > nb}
    assert late == KNOWN, sorted(late - KNOWN) or f'fixed: remove {sorted(KNOWN - late)} from KNOWN'


def test_no_import_circle():
    mods = imports()
    graph = {m: [d for d, top in deps.items() if top] for m, (_, deps) in mods.items()}
    state = {}
    def visit(m, path):
        if state.get(m) == 1: raise AssertionError(f"import circle: {' -> '.join(path + [m])}")
        if state.get(m) == 2: return
        state[m] = 1
        for d in graph.get(m, []): visit(d, path + [m])
        state[m] = 2
    for m in graph: visit(m, [])
