"""Model shapes, invariances and the import-string route for a user's own model."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

from gatrank.config import ModelConfig
from gatrank.model import GATRanker, LinearBaseline, build_model


def _graph(n: int, f: int = 5, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    src = torch.arange(n)
    dst = (src + 1) % n
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1)
    return Data(x=torch.randn(n, f, generator=g), edge_index=edge_index,
                y=torch.tensor([float(n)]))


def _batch():
    return Batch.from_data_list([_graph(4, seed=0), _graph(6, seed=1), _graph(3, seed=2)])


@pytest.mark.parametrize("conv", ["gat", "gatv2"])
@pytest.mark.parametrize("pooling", ["mean", "max", "add", "mean+max"])
def test_scores_and_embedding_shapes(conv, pooling):
    cfg = ModelConfig(conv=conv, pooling=pooling, hidden_dim=8, heads=2, num_layers=2,
                      dropout=0.0)
    model = GATRanker(5, cfg).eval()
    b = _batch()
    assert model(b).shape == (3,)
    assert model.embed(b).shape == (3, model.pool_dim)
    assert model.pool_dim == (16 if pooling == "mean+max" else 8)
    assert [h.shape for h in model.node_embeddings(b)] == [(13, 8), (13, 8)]


def test_score_head_is_the_runbooks():
    model = GATRanker(5, ModelConfig(hidden_dim=8, heads=2))
    kinds = [type(m).__name__ for m in model.score_head]
    assert kinds == ["Linear", "LayerNorm", "ReLU", "Linear"]
    assert model.score_head[0].in_features == model.pool_dim


def test_conv_type_is_configurable():
    from torch_geometric.nn import GATConv, GATv2Conv

    assert isinstance(GATRanker(5, ModelConfig(conv="gat")).convs[0], GATConv)
    assert isinstance(GATRanker(5, ModelConfig(conv="gatv2")).convs[0], GATv2Conv)


def test_invariant_to_node_order():
    torch.manual_seed(0)
    model = GATRanker(5, ModelConfig(hidden_dim=8, heads=2, dropout=0.0)).eval()
    g = _graph(6)
    perm = torch.randperm(6)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(6)
    h = Data(x=g.x[perm], edge_index=inv[g.edge_index], y=g.y)
    a = model(Batch.from_data_list([g]))
    b = model(Batch.from_data_list([h]))
    assert torch.allclose(a, b, atol=1e-5)


def test_graph_scores_do_not_depend_on_batch_neighbours():
    torch.manual_seed(0)
    model = GATRanker(5, ModelConfig(hidden_dim=8, heads=2, dropout=0.0)).eval()
    alone = model(Batch.from_data_list([_graph(4)]))
    together = model(_batch())[:1]
    assert torch.allclose(alone, together, atol=1e-5)


def test_residual_changes_the_function():
    torch.manual_seed(0)
    a = GATRanker(5, ModelConfig(hidden_dim=8, heads=2, dropout=0.0, residual=True)).eval()
    b = GATRanker(5, ModelConfig(hidden_dim=8, heads=2, dropout=0.0, residual=False)).eval()
    b.load_state_dict(a.state_dict())
    assert not torch.allclose(a(_batch()), b(_batch()))


def test_bounded_heads_stay_in_range():
    for head, lo, hi in [("sigmoid", 0.0, 1.0), ("tanh", -1.0, 1.0)]:
        model = GATRanker(5, ModelConfig(hidden_dim=8, heads=2, head=head)).eval()
        s = model(_batch())
        assert ((s >= lo) & (s <= hi)).all()


def test_linear_baseline_is_linear_in_mean_features():
    model = LinearBaseline(5)
    b = _batch()
    expected = model.linear(model.embed(b)).squeeze(-1)
    assert torch.allclose(model(b), expected)
    assert model(b).shape == (3,)


def test_build_model_from_import_string():
    model = build_model(5, spec="gatrank.model:LinearBaseline")
    assert isinstance(model, LinearBaseline)
    assert isinstance(build_model(5, ModelConfig(), "linear"), LinearBaseline)
    assert isinstance(build_model(5, ModelConfig(), ""), GATRanker)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_colon", "package.module:Name"),
        ("not_a_module_xyz:Model", "cannot import"),
        ("gatrank.model:Missing", "no attribute"),
        ("gatrank.model:__all__", "not a callable"),
    ],
)
def test_bad_model_strings_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        build_model(5, spec=spec)


def test_factory_returning_non_module_is_refused():
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        build_model(5, spec="builtins:str")
