"Tests of perturbdiff.gat: the batched GATv2 against torch_geometric, the fused kernel, the GRN blocks, equivariance."
import warnings

import numpy as np
import numba
import pytest
import torch
from torch import nn
from torch_geometric.nn import GATv2Conv

from perturbdiff.conditions import CONTROL_KEY, MODES
from perturbdiff.data import PerturbData
from perturbdiff.datasets import simulate
from perturbdiff.gat import (BatchedGATv2, DolorisPerturbationEmbedding, GRNBlock, PerturbationBatch,
                            PerturbationEncoder, PerturbationTable, cell_modes, gatv2_fused, gatv2_reference,
                            plan_edges, pseudobulk_pca, symbol_normal)
from perturbdiff.priors import GeneGraph, coexpression, drug_features, edge_list


def replicate(edge_index, n_nodes, batch):
    off = (torch.arange(batch) * n_nodes).repeat_interleave(edge_index.shape[1])
    return edge_index.repeat(1, batch) + off


CONFIGS = [dict(), dict(concat=True), dict(add_self_loops=False), dict(edge_dim=1),
           dict(heads=3, edge_dim=2, concat=True),
           dict(share_weights=True), dict(negative_slope=0.01, heads=1), dict(bias=False)]


@pytest.mark.parametrize('kw', CONFIGS)
def test_equals_gatv2conv_on_replicated_graph(kw):
    torch.manual_seed(0)
    B, N, E, D = 5, 60, 400, 12
    ei = torch.randint(0, N, (2, E))
    ed = kw.get('edge_dim')
    ea = torch.rand(E, ed) if ed else None
    conv = GATv2Conv(D, 7, **kw)
    if conv.bias is not None: nn.init.normal_(conv.bias)
    ours = BatchedGATv2.from_pyg(conv)
    x = torch.randn(B, N, D, requires_grad=True)
    y = ours(x, ei, ea)
    y2 = conv(x.reshape(B * N, D), replicate(ei, N, B), None if ea is None else ea.repeat(B, 1)).view(B, N, -1)
    assert (y - y2).abs().max() <= 1e-5
    w = torch.randn_like(y)
    g1 = torch.autograd.grad((y * w).sum(), [x, *ours.parameters()])
    g2 = torch.autograd.grad((y2 * w).sum(), [x, *conv.parameters()])
    for a, b in zip(g1, g2):
        assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max().item())


def test_state_dict_round_trip_and_unsupported():
    conv = GATv2Conv(4, 3, heads=2, edge_dim=1)
    ours = BatchedGATv2.from_pyg(conv)
    conv2 = GATv2Conv(4, 3, heads=2, edge_dim=1)
    conv2.load_state_dict(ours.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(conv.state_dict().values(), conv2.state_dict().values()))
    with pytest.raises(ValueError, match='residual'): BatchedGATv2.from_pyg(GATv2Conv(4, 3, residual=True))


def _random_case(dtype=torch.double, N=9, B=3, H=2, C=3, E=30, seed=0):
    torch.manual_seed(seed)
    plan = plan_edges(torch.randint(0, N, (2, E)), N, add_self_loops=True)
    t = lambda *s: torch.randn(*s, dtype=dtype, requires_grad=True)
    return plan, t(N, B, H, C), t(N, B, H, C), t(H, C), t(plan.n_edges, H, C)


@pytest.mark.parametrize('kernel', ['numba', 'torch'])
def test_fused_equals_reference_and_gradcheck(kernel):
    plan, xl, xr, att, et = _random_case()
    o1, a1 = gatv2_reference(xl, xr, att, plan, et)
    o2, a2 = gatv2_fused(xl, xr, att, plan, et, chunk_elements=25, kernel=kernel)
    assert torch.allclose(o1, o2) and torch.allclose(a1, a2)
    keep = (torch.rand(plan.n_edges, 3, 2) > 0.25).double() / 0.75
    assert torch.autograd.gradcheck(
        lambda *a: gatv2_fused(*a[:3], plan, a[3], chunk_elements=25, keep=keep, kernel=kernel)[0], (xl, xr, att, et))
    assert torch.autograd.gradcheck(lambda *a: gatv2_fused(*a, plan, None, negative_slope=0.1, kernel=kernel)[0],
                                    (xl, xr, att))


def test_numba_kernel_equals_torch_kernel_in_float32():
    "The compiled CPU kernel against the torch kernel: values and all four gradients, with edge terms and dropout."
    plan, xl, xr, att, et = _random_case(torch.float32, N=80, E=900)
    keep = (torch.rand(plan.n_edges, 3, 2) > 0.25).float() / 0.75
    res = {}
    for k in ('numba', 'torch'):
        o, a = gatv2_fused(xl, xr, att, plan, et, keep=keep, kernel=k)
        res[k] = (o, a, *torch.autograd.grad((o * o).sum(), (xl, xr, att, et)))
    for x, y in zip(res['numba'], res['torch']):
        assert ((x - y).abs().max() / y.abs().max()).item() < 1e-5


@pytest.mark.parametrize('chunk', [1, 7, 64, 1 << 20])
def test_chunk_size_does_not_change_results(chunk):
    plan, xl, xr, att, _ = _random_case(torch.float32, N=40, E=300)
    ref, _ = gatv2_fused(xl, xr, att, plan, chunk_elements=1 << 30, kernel='torch')  # chunks: the torch kernel's
    out, _ = gatv2_fused(xl, xr, att, plan, chunk_elements=chunk, kernel='torch')
    assert torch.allclose(ref, out, atol=1e-6)


@pytest.mark.parametrize('kernel', ['numba', 'torch'])
@pytest.mark.parametrize('workers', [2, 5])
def test_worker_threads_give_the_same_results(workers, kernel):
    plan, xl, xr, att, et = _random_case(torch.float32, N=60, E=600)
    before = torch.get_num_threads()
    outs, grads = [], []
    for w in (1, workers):
        o, a = gatv2_fused(xl, xr, att, plan, et, chunk_elements=64, num_threads=w, kernel=kernel)
        outs.append((o, a)); grads.append(torch.autograd.grad(o.square().sum(), (xl, xr, att, et)))
        assert torch.get_num_threads() == before  # restored
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])  # forward: bit for bit
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads))


def test_isolated_nodes_get_the_bias_and_attention_is_normalised():
    layer = BatchedGATv2(4, 3, heads=2)
    nn.init.normal_(layer.bias)
    ei = torch.tensor([[0, 1, 2], [1, 2, 1]])  # nodes 0 and 3 receive nothing
    y, (pei, alpha) = layer(torch.randn(2, 4, 4), ei, return_attention=True)
    assert torch.allclose(y[:, [0, 3]], layer.bias.expand(2, 2, 3))
    sums = torch.zeros(4, 2, 2).index_add_(0, pei[1], alpha)
    assert torch.allclose(sums[[1, 2]], torch.ones(2, 2, 2))
    x1 = torch.randn(4, 4)
    assert torch.allclose(layer(x1, ei), layer(x1[None], ei)[0])


def test_attention_dropout_trains_and_evals():
    torch.manual_seed(0)
    layer = BatchedGATv2(4, 3, heads=2, dropout=0.5)
    x, ei = torch.randn(2, 6, 4), torch.randint(0, 6, (2, 20))
    plan = layer.plan(ei, 6)
    layer.eval(); a, b = layer(x, plan), layer(x, plan)
    assert torch.equal(a, b)
    layer.train(); c = layer(x, plan)
    assert not torch.allclose(a, c)
    c.sum().backward()


def test_plan_policy_mismatch_and_bad_graphs():
    layer = BatchedGATv2(3, 3, add_self_loops=True)
    with pytest.raises(ValueError, match='self-loop policy'):
        layer(torch.randn(1, 4, 3), plan_edges(torch.tensor([[0], [1]]), 4))
    with pytest.raises(ValueError, match=r'\[2, E\]'): plan_edges(torch.tensor([0, 1, 2]), 4)
    with pytest.raises(ValueError, match='edge_dim=1; pass edge_attr'):
        BatchedGATv2(3, 3, edge_dim=1)(torch.randn(1, 4, 3), torch.tensor([[0], [1]]))


# ---------------------------------------------------------------- GRN blocks on simulated data

@pytest.fixture(scope='module')
def sim():
    return simulate(seed=0, n_genes=40, n_regulators=5, n_single=8, n_combo=3, cells_per_group=6, n_control=60,
                    n_cell_types=1)


def _setup(adata, seed=0, **block_kw):
    data = PerturbData(adata, cell_type_key='cell_type', mode_key='perturbation_type')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        graph = GeneGraph.build(data,
                                [coexpression(0.3), edge_list(adata.uns['simulation']['edges'], weight_col='weight')])
    torch.manual_seed(seed)
    block = GRNBlock(graph, dim=12, time_dim=6, dropout=0.0, **block_kw).eval()
    return data, graph, block


def _cells_and_conditions(data, step=5):
    cells = np.arange(0, data.n_cells, step)
    cond = torch.as_tensor(
        [data.vocab.index(c) if c != CONTROL_KEY else -1 for c in data.obs.condition.astype(str).iloc[cells]]
    )
    return cells, cond


@pytest.mark.parametrize('layers,use_edge_weight', [(1, False), (2, True)])
def test_permuting_genes_permutes_the_block_outputs(sim, layers, use_edge_weight):
    "Equivariance: genes of the input AnnData permuted -> per-gene outputs permuted the same way."
    perm = np.random.default_rng(7).permutation(sim.n_vars)
    kw = dict(layers=layers, use_edge_weight=use_edge_weight)
    data_a, graph_a, block_a = _setup(sim, **kw)
    data_b, graph_b, block_b = _setup(sim[:, perm].copy(), **kw)
    assert graph_b.measured == list(sim.var_names[perm])
    cells, cond = _cells_and_conditions(data_a)
    xa, xb = torch.as_tensor(data_a.dense(cells)) / 5, torch.as_tensor(data_b.dense(cells)) / 5
    t = torch.randn(len(cells), 6)
    pa = PerturbationTable.from_data(data_a, graph_a).batch(cond, mode=cell_modes(data_a)[cells])
    pb = PerturbationTable.from_data(data_b, graph_b).batch(cond, mode=cell_modes(data_b)[cells])
    ya, yb = block_a(xa, t, perturbation=pa), block_b(xb, t, perturbation=pb)
    assert torch.allclose(ya[:, perm], yb, atol=1e-5)
    assert not torch.allclose(ya, yb, atol=1e-3)  # the check has teeth


def test_doloris_is_order_free(sim):
    perm = np.random.default_rng(2).permutation(sim.n_vars)
    out = []
    for adata in (sim, sim[:, perm].copy()):
        data, graph, _ = _setup(adata)
        torch.manual_seed(0)
        dol = DolorisPerturbationEmbedding(graph, pseudobulk_pca(data, graph, 6), dim=8, layers=2)
        out.append(dol(PerturbationTable.from_data(data, graph).targets))
    assert torch.allclose(out[0], out[1], atol=1e-5)


def test_doloris_rows_and_combinations(sim):
    data, graph, _ = _setup(sim)
    feats = pseudobulk_pca(data, graph, 8)
    assert feats.shape == (graph.n_nodes, 8) and (feats[graph.n_measured:] == 0).all()
    dol = DolorisPerturbationEmbedding(graph, feats, dim=8)
    z = dol.node_embeddings()
    targets = torch.tensor([[-1, -1, -1], [0, -1, -1], [0, 3, graph.n_nodes - 1]])  # control, single, triple
    assert torch.allclose(dol(targets), torch.stack([torch.zeros(8), z[0], z[0] + z[3] + z[-1]]), atol=1e-6)
    rows = dol(targets, reduce=None)
    assert rows.shape == (3, 3, 8) and (rows[1, 1:] == 0).all()
    assert 'node_features' in dict(dol.named_buffers()) and not any(p.shape == feats.shape for p in dol.parameters())


def test_gene_perturbation_reaches_only_graph_neighbours(sim):
    data, graph, block = _setup(sim)
    ei = graph.edge_index.numpy()
    node = next(i for i in range(graph.n_measured, graph.n_nodes) if (ei[1, ei[0] == i] < graph.n_measured).any())
    x = torch.as_tensor(data.dense([0])) / 5
    t = torch.zeros(1, 6)
    base = block(x, t)
    for mode in ('knockdown', 'activation'):
        y = block(x, t,
                  perturbation=PerturbationBatch('gene', torch.tensor([[node]]), torch.tensor([MODES.index(mode)])))
        changed = set(np.flatnonzero((y - base).abs()[0].detach().numpy() > 1e-7))
        assert changed and changed <= set(ei[1, ei[0] == node])


def test_modes_differ_once_directions_are_learned(sim):
    data, graph, block = _setup(sim)
    with torch.no_grad(): block.perturbation.encoder.direction.normal_()
    x, t = torch.as_tensor(data.dense([0])) / 5, torch.zeros(1, 6)
    tg = torch.tensor([[graph.n_measured]])
    ys = [block(x, t, perturbation=PerturbationBatch('gene', tg, torch.tensor([MODES.index(m)]))) for m in MODES]
    assert not torch.allclose(ys[1], ys[2])  # knockdown != activation


def test_table_serves_test_conditions_and_modes(sim):
    data = PerturbData(sim, cell_type_key='cell_type', mode_key='perturbation_type')
    split = data.split('unseen_perturbation', test_frac=0.3, seed=0)
    _, graph, _ = _setup(sim)
    table = PerturbationTable.from_data(split.train, graph)
    for c in split.test.conditions:
        row = table.batch(torch.tensor([data.vocab.index(c)]))
        assert [graph.genes[i] for i in row.targets[0].tolist() if i >= 0] == c.split('+')
        assert MODES[int(row.mode[0])] == 'knockdown'
    with pytest.raises(IndexError): table.batch(torch.tensor([len(data.vocab)]))


def test_drug_block_runs_and_ignores_vehicle():
    pytest.importorskip('rdkit', reason='drug fingerprints need the drugs extra (rdkit)')
    dsim = simulate(kind='drug', n_drugs=4, n_genes=30, cells_per_group=4, n_control=20, seed=1, n_cell_types=1)
    data = PerturbData(dsim, cell_type_key='cell_type', dose_key='dose', smiles_key='SMILES')
    graph = GeneGraph.build(data, [coexpression(0.3)])
    feats = drug_features(data.smiles, n_bits=64)
    table = PerturbationTable.from_data(data, graph, drug_features=feats)
    torch.manual_seed(0)
    block = GRNBlock(graph, dim=8, kind='drug', drug_dim=64, time_dim=4, dropout=0.0)
    cond = torch.tensor([-1, 0, 0, 2])
    pb = table.batch(cond, dose=torch.tensor([0.0, 10.0, 10000.0, 100.0]))
    assert pb.dose.tolist() == pytest.approx([0.0, np.log10(11), np.log10(10001), np.log10(101)])
    x = torch.rand(1, graph.n_measured).expand(4, -1)
    t = torch.zeros(4, 4)
    y = block(x, t, perturbation=pb)
    assert torch.allclose(y[0], block(x[:1], t[:1])[0], atol=1e-6)  # vehicle = no perturbation
    assert not torch.allclose(y[1], y[2])  # dose matters
    y.sum().backward()


def test_label_block_and_unseen_labels():
    enc = PerturbationEncoder('label', 4, n_labels=2)
    h, e = torch.randn(2, 3, 4), torch.randn(3, 4)
    out = enc(h, e, PerturbationBatch('label', label=torch.tensor([-1, 1])))
    assert torch.equal(out[0], h[0]) and not torch.allclose(out[1], h[1])
    with pytest.raises(IndexError, match='fewer labels'):
        enc(h, e, PerturbationBatch('label', label=torch.tensor([2, 0])))
    with pytest.raises(ValueError, match="'gene' batch"):
        enc(h, e, PerturbationBatch('gene', torch.tensor([[0], [1]]), torch.tensor([0, 0])))
    tab = PerturbationTable(['a', 'b'], 'label', seen=['a'])
    with pytest.raises(ValueError, match='no training cells'): tab.batch(torch.tensor([1]))


def test_symbol_seeded_parameters():
    a = symbol_normal(['KLF1', 'CEBPE'], 5)
    assert torch.equal(a[0], symbol_normal(['X', 'KLF1'], 5)[1])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_fused_on_cuda_matches_cpu():
    plan, xl, xr, att, et = _random_case(torch.float32, N=300, E=3000, B=4, H=2, C=8)
    cpu, _ = gatv2_fused(xl, xr, att, plan, et)
    dev = torch.device('cuda')
    gpu, _ = gatv2_fused(xl.detach().to(dev), xr.detach().to(dev), att.detach().to(dev), plan.to(dev),
                         et.detach().to(dev))
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-5)


def test_numba_kernels_without_a_writable_cache_folder(monkeypatch):
    "Where numba finds no folder to cache in (read-only install and home), the kernels are built without a disk cache."
    import numba.core.caching as caching
    from perturbdiff import gat
    if not hasattr(getattr(caching, 'CacheImpl', None), '_locator_classes'):
        pytest.skip("this numba version keeps its cache locators elsewhere (the test patches numba's internals)")
    monkeypatch.setattr(caching.CacheImpl, '_locator_classes', [])
    monkeypatch.setattr(gat, '_NB', {})
    with pytest.raises(RuntimeError, match='no locator'):  # what numba does with cache=True there
        numba.njit(cache=True)(lambda x: x)
    assert all(isinstance(k._cache, caching.NullCache) for k in gat._nb_kernels())
