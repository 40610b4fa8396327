"Tests of perturbdiff.priors: node order, edge sources, union, reachability, GO, drug features."
import gzip
import pickle
import socket
import sys
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from perturbdiff.data import PerturbData
from perturbdiff.datasets import read_smiles_table, simulate
from perturbdiff.priors import (GeneGraph, SymbolResolver, coexpression, combination_features, drug_features, edge_list,
                                embedding, encode_dose, go, go_db_path, is_vehicle, parse_gaf, read_go)

GO_DB = go_db_path()
needs_go = pytest.mark.skipif(GO_DB is None, reason='org.Hs.eg.db SQLite not found: run tools/fetch_go_db.sh '
                                                    'or set PERTURBDIFF_GO_DB')


@pytest.fixture(scope='module')
def ontology():
    return read_go(GO_DB)


@pytest.fixture(scope='module')
def sim():
    return simulate(seed=0, n_genes=50, n_regulators=6, n_single=8, n_combo=3, cells_per_group=8, n_control=60,
                    n_cell_types=1)


def _data(adata):
    return PerturbData(adata, cell_type_key='cell_type', mode_key='perturbation_type')


def _build(data, truth, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return GeneGraph.build(data, [coexpression(0.3), edge_list(truth, weight_col='weight')], **kw)


def test_node_order_and_index(sim):
    data = _data(sim)
    g = _build(data, sim.uns['simulation']['edges'], extra_genes=['EXTRA2', 'EXTRA1', data.genes[0]])
    assert g.genes[:g.n_measured] == list(data.genes)
    unmeasured = sorted(set(data.targets) - set(data.genes))
    assert g.genes[g.n_measured:] == unmeasured + ['EXTRA2', 'EXTRA1']
    assert all(g.index[s] == i for i, s in enumerate(g.genes))
    assert list(g.node_index(['EXTRA1', data.genes[3]])) == [g.n_nodes - 1, 3]
    with pytest.raises(KeyError, match='not nodes of the graph'): g.node_index(['NOPE'])


def test_targets_come_from_the_whole_vocab(sim):
    split = _data(sim).split('unseen_perturbation', test_frac=0.3, seed=0)
    g = _build(split.train, sim.uns['simulation']['edges'])
    for c in split.test.conditions:
        assert all(t in g.index for t in c.split('+'))


def test_gene_permutation_gives_the_same_graph_by_symbol(sim):
    truth = sim.uns['simulation']['edges']
    perm = np.random.default_rng(3).permutation(sim.n_vars)
    emb = pd.DataFrame(np.random.default_rng(0).normal(size=(sim.n_vars, 5)), index=sim.var_names)
    g2g = {g: {f't{(i * 7) % 11}', f't{(i * 3) % 5}'} for i, g in enumerate(sim.var_names)}
    def edges(adata):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            g = GeneGraph.build(_data(adata), [coexpression(0.3), edge_list(truth, weight_col='weight'),
                                               embedding(emb, k=3), go(g2g, k=4)])
        return g.edges_frame().set_index(['source', 'target'])
    a, b = edges(sim), edges(sim[:, perm].copy())
    assert set(a.index) == set(b.index)
    assert np.allclose(a.weight, b.loc[a.index].weight, atol=1e-6)
    assert (a.sources == b.loc[a.index].sources).all()


def test_union_symmetry_self_loops_and_weights():
    el1 = pd.DataFrame({'source': ['A', 'B'], 'target': ['B', 'C'], 'weight': [0.5, -2.0]})
    el2 = pd.DataFrame({'source': ['B'], 'target': ['A'], 'weight': [0.9]})
    g = GeneGraph.build(genes=['A', 'B', 'C'],
                        sources=[edge_list(el1, weight_col='weight'), edge_list(el2, weight_col='weight')])
    e = g.edges_frame().set_index(['source', 'target'])
    assert e.loc[('A', 'B'), 'weight'] == pytest.approx(0.9) and e.loc[('B', 'A'), 'weight'] == pytest.approx(0.9)
    assert e.loc[('C', 'B'), 'weight'] == pytest.approx(-2.0)  # largest magnitude, sign kept
    assert e.loc[('A', 'B'), 'sources'] == 'edge_list+edge_list'
    assert e.loc[('A', 'A'), 'weight'] == 1.0 and e.loc[('A', 'A'), 'sources'] == ''
    d = GeneGraph.build(genes=['A', 'B', 'C'], sources=[edge_list(el1)], symmetric=False, self_loops=False)
    assert sorted(zip(*d.edge_index.tolist())) == [(0, 1), (1, 2)]  # torch_geometric convention: row 0 = source
    assert d.edge_weight.tolist() == [1.0, 1.0]
    src, dst = g.edge_index
    assert (torch.diff(dst) >= 0).all()  # sorted by target


def test_coexpression_uses_only_control_cells(sim):
    truth_free = lambda a: GeneGraph.build(_data(a), [coexpression(0.3)], warn=False)
    s2 = sim.copy()
    pert = (s2.obs.condition != 'control').to_numpy()
    X = s2.X.toarray(); X[pert] = np.random.default_rng(0).permutation(X[pert]); s2.X = sp.csr_matrix(X)
    assert torch.equal(truth_free(sim).edge_index, truth_free(s2).edge_index)
    g = truth_free(sim)
    src, dst = g.edge_index
    off = src != dst
    assert (src[off] < g.n_measured).all() and (dst[off] < g.n_measured).all()  # never touches unmeasured targets


def test_coexpression_threshold_matches_numpy(sim):
    data = _data(sim)
    g = GeneGraph.build(data, [coexpression(0.4)], self_loops=False, warn=False)
    X = data.dense(np.flatnonzero(data.obs.control.to_numpy()))
    with np.errstate(invalid='ignore', divide='ignore'): r = np.corrcoef(X.T)
    r = np.nan_to_num(r); np.fill_diagonal(r, 0)
    want = set(zip(*np.nonzero(np.abs(r) >= 0.4)))
    got = set(zip(*g.edge_index.tolist()))
    near = {p for p in want ^ got if abs(abs(r[p]) - 0.4) < 1e-5}
    assert want ^ got == near


def test_unreachable_targets_warn(sim):
    with pytest.warns(UserWarning, match='no path to a measured gene'):
        g = GeneGraph.build(_data(sim), [coexpression(0.3)])
    assert g.summary()['unreachable_targets'] == [t for t in g.targets if t.startswith('REG')]
    hops = g.hops_to_measured()
    assert (hops[:g.n_measured] == 0).all()


def test_hops_follow_edge_direction():
    el = pd.DataFrame({'source': ['T', 'U'], 'target': ['U', 'A']})
    g = GeneGraph.build(genes=['A'], targets=['T', 'U', 'V'], sources=[edge_list(el)], symmetric=False, warn=False)
    assert dict(zip(g.genes, g.hops_to_measured().tolist())) == {'A': 0, 'T': 2, 'U': 1, 'V': -1}
    r = GeneGraph.build(genes=['A'], targets=['T', 'U'],
                        sources=[edge_list(el.rename(columns={'source': 'target', 'target': 'source'}))],
                        symmetric=False, warn=False)
    assert r.reachable() == {'T': False, 'U': False}  # edges point away from the measured gene


def test_go_from_gene2go_pickle(tmp_path):
    g2g = {'A': {'t1', 't2'}, 'B': {'t1', 't2', 't3'}, 'C': {'t3'}, 'D': {'t1', 't2', 't3'}, 'E': {'t9'},
           'F': {'t1', 't5', 't6', 't7', 't8', 't9', 't10', 't11', 't12', 't13'}}
    path = tmp_path / 'gene2go.pkl'
    with open(path, 'wb') as f: pickle.dump(g2g, f)
    ont = read_go(path)
    g = GeneGraph.build(genes=['D', 'C', 'B', 'A', 'F'], targets=['E'], sources=[go(path, k=1)], symmetric=False,
                        self_loops=False, warn=False)
    e = g.edges_frame()
    into = e.groupby('target').apply(lambda x: sorted(x.source), include_groups=False).to_dict()
    # A: B and D tie at 2/3 -> B (symbol order); B: D (J=1); C: B and D tie at 1/3 -> B; D: B (J=1)
    assert into == {'A': ['B'], 'B': ['D'], 'C': ['B'], 'D': ['B']}
    assert e.set_index(['source', 'target']).loc[('B', 'A'), 'weight'] == pytest.approx(2 / 3)
    # F shares t1 with A, B, D: J = 1/11 or 1/12 < 0.1 (GEARS' strict threshold) -> no edge; E shares nothing
    assert g.reachable() == {'E': False}
    assert 'F' not in into and ont.terms('E') == {'t9'}
    g3 = GeneGraph.build(genes=['A', 'B', 'D'], sources=[go(g2g, k=None, min_similarity=0.0)], self_loops=False,
                         symmetric=False)
    assert g3.n_edges == 6


def test_symbol_resolver_rules():
    res = SymbolResolver(['TARS1', 'SARS1', 'SARS2', 'MARS1', 'SLA2', 'X1', 'Y'],
                         pd.DataFrame({'alias': ['TARS', 'SARS', 'SARS', 'MARS', 'MARS', 'AMB', 'AMB'],
                                       'symbol': ['TARS1', 'SARS1', 'SARS2', 'MARS1', 'SLA2', 'X1', 'Y']}),
                         overrides={'OLD': 'Y'})
    assert res.resolve_many(['TARS', 'SARS', 'MARS', 'Tars', 'AMB', 'OLD', 'Y']) == {
        'TARS': 'TARS1', 'SARS': 'SARS1', 'MARS': 'MARS1', 'Tars': None, 'AMB': None, 'OLD': 'Y', 'Y': 'Y'}
    assert res.ambiguous == {'AMB': ['X1', 'Y']}


def test_aliases_in_edge_lists_and_targets():
    aliases = {'OLD': 'NEW'}
    el = pd.DataFrame({'source': ['OLD'], 'target': ['B']})
    g = GeneGraph.build(genes=['NEW', 'B'], targets=['OLD'], sources=[edge_list(el)], aliases=aliases, symmetric=False)
    assert g.genes == ['NEW', 'B'] and g.index['OLD'] == 0
    assert (0, 1) in set(zip(*g.edge_index.tolist()))


def test_edge_list_and_embedding_files(tmp_path):
    tsv = tmp_path / 'dorothea.tsv'
    pd.DataFrame({'tf': ['A', 'A', 'Z'], 'target': ['B', 'C', 'A'],
                  'mor': [1, -1, 1]}).to_csv(tsv, sep='\t', index=False)
    src = edge_list(tsv, source_col='tf', weight_col='mor')
    g = GeneGraph.build(genes=['A', 'B', 'C'], sources=[src], symmetric=False, self_loops=False)
    assert g.edges_frame()[['source', 'target', 'weight']].values.tolist() == [['A', 'B', 1.0], ['A', 'C', -1.0]]
    assert g.info['edge_list_dropped'] == 1
    with pytest.raises(KeyError, match='source_col='): GeneGraph.build(genes=['A'], sources=[edge_list(tsv)])
    csv = tmp_path / 'emb.csv'
    pd.DataFrame([[1, 0], [1, 0.05], [0, 1]], index=['A', 'B', 'C']).to_csv(csv)
    ge = GeneGraph.build(genes=['A', 'B', 'C'], sources=[embedding(csv, threshold=0.9)], self_loops=False)
    assert sorted(zip(*ge.edge_index.tolist())) == [(0, 1), (1, 0)]
    with pytest.raises(ValueError, match='threshold= or k='): GeneGraph.build(genes=['A'], sources=[embedding(csv)])


def test_go_db_path_env(tmp_path, monkeypatch):
    f = tmp_path / 'x.sqlite'; f.write_bytes(b'')
    monkeypatch.setenv('PERTURBDIFF_GO_DB', str(f))
    assert go_db_path() == f
    monkeypatch.setenv('PERTURBDIFF_GO_DB', str(tmp_path / 'missing'))
    with pytest.raises(FileNotFoundError, match='fetch_go_db.sh'): go_db_path()
    monkeypatch.delenv('PERTURBDIFF_GO_DB'); monkeypatch.setenv('PERTURBDIFF_CACHE', str(tmp_path))
    assert go_db_path() is None
    s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()
    monkeypatch.setenv('PERTURBDIFF_GO_URL', f'http://127.0.0.1:{port}/goa_human.gaf.gz')  # offline: nothing listens
    with pytest.raises(FileNotFoundError, match='fetch_go_db.sh'): read_go()


@needs_go
def test_norman_go_graph_reaches_every_annotated_target(ontology, shared):
    pb = ad.read_h5ad(shared / 'perturbench_devel.h5ad')
    norman = PerturbData(pb[pb.obs.dataset == 'norman19'], cell_type_key='cell_type', mode='CRISPRa')
    train = norman.split('unseen_combo', test_frac=1.0, n_top_genes=None).train
    ont = ontology
    with pytest.warns(UserWarning, match='IER5L'):
        g = GeneGraph.build(train, [go(ont, k=20)])
    assert len(g.targets) == 31 and all(t in g.index for t in g.targets)
    assert g.n_nodes == 530 and g.genes[:500] == list(train.genes)
    annotated = [t for t in g.targets if ont.terms(t)]
    assert len(annotated) == 30
    hops = g.hops_to_measured()
    assert all(hops[g.index[t]] >= 0 for t in annotated)


def _gaf_row(symbol, go_id, evidence='IDA', aspect='F', qualifier='enables', synonyms=''):
    return '\t'.join(['UniProtKB', 'P_' + symbol, symbol, qualifier, go_id, 'PMID:1', evidence, '', aspect, 'name',
                      synonyms, 'protein', 'taxon:9606', '20200101', 'UniProt', '', ''])


TOY_GAF = '\n'.join([
    '!gaf-version: 2.2',
    '!date-generated: 2024-06-17T02:00',
    '!generated-by: GOC',
    _gaf_row('GENEA', 'GO:0000001', synonyms='OLDA|A-1'),
    _gaf_row('GENEA', 'GO:0000002', evidence='IEA', aspect='P', qualifier='involved_in', synonyms='OLDA|A-1'),
    _gaf_row('GENEB', 'GO:0000001', synonyms='OLDB'),
    _gaf_row('GENEB', 'GO:0000002', evidence='IMP', aspect='P', qualifier='involved_in'),
    _gaf_row('GENEB', 'GO:0000009', qualifier='NOT|enables'),  # a NOT annotation: GENEB does *not* have it
    _gaf_row('GENEC', 'GO:0000009'),
    _gaf_row('GENEC', 'GO:0005575', evidence='ND', aspect='C', qualifier='is_active_in'),
    _gaf_row('GENED', 'GO:0005575', evidence='ND', aspect='C', qualifier='is_active_in'),  # ND only: no known function
    'UniProtKB\tP_GENEE\tGENEE',  # malformed: too few columns
    '!a comment in the middle',
    '',
    _gaf_row('TGT1', 'GO:0000001', synonyms='OLDT1') + '\r',  # a Windows line ending
    _gaf_row('TGT1', 'GO:0000002', evidence='IDA', aspect='P', qualifier='involved_in'),
]) + '\n'


@pytest.fixture()
def toy_gaf(tmp_path):
    path = tmp_path / 'toy.gaf.gz'
    path.write_bytes(gzip.compress(TOY_GAF.encode()))
    return path


def test_parse_gaf_skips_comments_and_not_rows(toy_gaf):
    ann, aliases, meta = parse_gaf(toy_gaf)
    assert list(ann.columns) == ['symbol', 'go_id', 'ontology', 'evidence']
    assert ('GENEB', 'GO:0000009') not in set(zip(ann.symbol, ann.go_id))  # NOT excluded
    assert ('GENEC', 'GO:0000009') in set(zip(ann.symbol, ann.go_id))
    assert len(ann) == 9 and sorted(ann.symbol.unique()) == ['GENEA', 'GENEB', 'GENEC', 'GENED', 'TGT1']
    assert set(ann.ontology) == {'BP', 'MF', 'CC'} and not ann.go_id.str.contains('\r').any()
    assert meta['skipped_not'] == 1 and meta['skipped_malformed'] == 1
    assert meta['gaf-version'] == '2.2' and meta['date-generated'] == '2024-06-17T02:00'
    assert set(zip(aliases.alias, aliases.symbol)) == {('OLDA', 'GENEA'), ('A-1', 'GENEA'), ('OLDB', 'GENEB'),
                                                       ('OLDT1', 'TGT1')}


def test_read_go_from_a_gaf_file_and_its_evidence_choices(toy_gaf, tmp_path):
    ont = read_go(toy_gaf, cache=tmp_path / 'cache')
    assert ont.kind == 'GAF' and '2024-06-17' in ont.label and str(toy_gaf) in ont.label
    assert ont.terms('GENED') == set()  # ND (no biological data) is excluded by default
    assert ont.terms('OLDA') == {'GO:0000001', 'GO:0000002'}  # through the GAF's synonyms
    assert read_go(toy_gaf, exclude_evidence=(), cache=tmp_path / 'cache').terms('GENED') == {'GO:0005575'}
    assert read_go(toy_gaf, exclude_evidence=('ND', 'IEA'), cache=tmp_path / 'cache').terms('GENEA') == {'GO:0000001'}
    assert read_go(toy_gaf, ontologies=('BP',), cache=tmp_path / 'cache').terms('GENEB') == {'GO:0000002'}
    assert not ont.annotations.duplicated().any() and list(ont.annotations.columns) == ['symbol', 'go_id']
    with pytest.raises(ValueError, match='Unknown GO ontologies'): read_go(toy_gaf, ontologies=('XX',))
    bad = tmp_path / 'bad.gaf.gz'
    bad.write_bytes(toy_gaf.read_bytes()[:60])
    with pytest.raises(ValueError, match='not a complete GAF'): read_go(bad, cache=tmp_path / 'cache')
    assert bad.exists()  # a user's own file is never deleted


def test_summary_counts_connected_targets_and_names_each_source(toy_gaf, tmp_path, capsys):
    ont = read_go(toy_gaf, cache=tmp_path / 'cache')
    el = pd.DataFrame({'source': ['GENED'], 'target': ['GENEC']})
    g = GeneGraph.build(genes=['GENEA', 'GENEB', 'GENEC'], targets=['TGT1', 'GENED', 'OLDA', 'NOPE'],
                        sources=[go(ont), edge_list(el)], warn=False, verbose=True)
    s = g.summary()
    assert (s['targets'], s['targets_measured'], s['targets_connected']) == (4, 1, 3)
    assert s['unreachable_targets'] == ['NOPE']
    assert s['unmeasured_targets_connected_by_source'] == {'go': 1, 'edge_list': 1}  # TGT1 by GO, GENED by the list
    assert s['sources']['go'].startswith('GO GAF') and str(toy_gaf) in s['sources']['go']
    assert s['sources']['edge_list'].startswith('edge list')
    out = capsys.readouterr().out
    assert out == g.describe() + '\n'
    assert '4 perturbation targets' in out and '3 connected to a measured gene' in out and 'NOPE' in out
    assert 'GO GAF' in out and 'edge list' in out


def test_summary_names_coexpression(sim):
    g = GeneGraph.build(_data(sim), [coexpression(0.3)], warn=False)
    s = g.summary()
    assert s['sources']['coexpression'].startswith('co-expression') and (f"{int(_data(sim).obs.control.sum())} control "
                                                                         "cells") in s['sources']['coexpression']
    assert s['targets_connected'] + len(s['unreachable_targets']) == s['targets']
    assert s['unmeasured_targets_connected_by_source'] == {'coexpression': 0}  # co-expression never reaches unmeasured
                                                                               # targets


@needs_go
def test_sqlite_source_is_named(ontology):
    assert ontology.kind == 'sqlite' and ontology.label.startswith('GO sqlite')
    g = GeneGraph.build(genes=['TARS1', 'KLF1'], targets=['CEBPE'], sources=[go(ontology)], warn=False)
    assert g.summary()['sources']['go'].startswith('GO sqlite')


@needs_go
def test_adamson_tars_resolves_to_tars1(ontology, shared):
    adamson = PerturbData(ad.read_h5ad(shared / 'adamson_mini.h5ad'), mode='CRISPRi')
    g = GeneGraph.build(adamson, [go(ontology)], warn=False)
    assert g.resolved['TARS'] == 'TARS1'
    e = g.edges_frame()
    assert ((e.target == 'TARS') & (e.source != 'TARS')).any()


def test_drug_features_and_vehicle():
    pytest.importorskip('rdkit', reason='drug fingerprints need the drugs extra (rdkit)')
    fp = drug_features({'DMSO': 'CS(C)=O', 'aspirin': 'CC(=O)Oc1ccccc1C(=O)O'}, n_bits=512, radius=3)
    assert fp.shape == (2, 512) and fp.loc['DMSO'].sum() == 0 and fp.loc['aspirin'].sum() > 0
    with pytest.raises(ValueError, match="drug 'bad'"):
        drug_features({'bad': 'c1cc', 'ok': 'CCO'})
    with pytest.raises(ValueError, match="drug 'empty'"):
        drug_features({'empty': ''})
    emb = drug_features({'DMSO': 'CS(C)=O', 'x': 'CCO'}, method='embedding',
                        table=pd.DataFrame([[1.0, 2.0]], index=['x']))
    assert emb.values.tolist() == [[0, 0], [1, 2]]
    assert is_vehicle('vehicle') and is_vehicle('Dmso') and not is_vehicle('x', 'CCO')
    assert encode_dose([0, 999]).tolist() == [0.0, 3.0]
    with pytest.raises(ValueError, match='>= 0'): encode_dose([-1])
    cf = combination_features(fp, ['aspirin+DMSO'])
    assert np.array_equal(cf.values[0], fp.loc['aspirin'].values)


def test_rdkit_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, 'rdkit', None)
    with pytest.raises(ImportError, match=r'perturbdiff\[drugs\]'):
        drug_features({'x': 'CCO'})


def test_sciplex_smiles_all_fingerprinted(shared):
    pytest.importorskip('rdkit', reason='drug fingerprints need the drugs extra (rdkit)')
    table = read_smiles_table(shared / 'sciplex3_drugs_smiles.csv')
    fps = drug_features(table)
    drugs = [d for d, s in table.items() if not is_vehicle(d, s)]
    assert len(drugs) == 187
    assert (fps.loc[drugs].sum(1) > 0).all()
    assert len({tuple(np.flatnonzero(r)) for r in fps.loc[drugs].values}) > 150  # distinct structures
