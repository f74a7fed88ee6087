"""Model shapes, invariances and the import-string route for a user's own model: PyG-style
forwards called by name, constructors filled in, and every wrong score shape named."""

from __future__ import annotations

import re

import pytest
import torch
from torch_geometric.data import Batch, Data

from gatrank.config import ConfigError, ModelConfig
from gatrank.model import (
    ForwardByName,
    GATRanker,
    LinearBaseline,
    ScoreShapeError,
    adapt_forward,
    build_model,
    check_scores,
    reads_edge_attr,
    score_batch,
)


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


# --------------------------------------------------------------------------- a user's PyG model


def _edge_batch(edge_dim: int = 3):
    graphs = []
    for i, n in enumerate((4, 6, 3)):
        g = _graph(n, seed=i)
        g.edge_attr = torch.randn(g.edge_index.shape[1], edge_dim,
                                  generator=torch.Generator().manual_seed(10 + i))
        graphs.append(g)
    return Batch.from_data_list(graphs)


AFP = "torch_geometric.nn.models:AttentiveFP"
AFP_KWARGS = {"hidden_channels": 8, "num_layers": 2, "num_timesteps": 2}


def test_pyg_forward_gets_the_batch_tensors_by_name():
    from custom_plugins import PyGGCN

    torch.manual_seed(0)
    model = build_model(5, ModelConfig(kwargs={"hidden_channels": 8}), "custom_plugins:PyGGCN")
    assert isinstance(model, PyGGCN) and model.lin.out_features == 1  # out_channels filled in
    b = _batch()
    expected = model(b.x, b.edge_index, b.batch).reshape(-1)  # the user's own call still works
    assert torch.equal(score_batch(model, b), expected)
    assert score_batch(model, b).shape == (3,)


def test_edge_attr_and_num_graphs_are_passed_and_edge_dim_filled_in():
    model = build_model(5, None, "custom_plugins:EdgeAware", edge_dim=3)
    assert model.edge_dim == 3 and model.conv.lin_edge.weight.shape[1] == 3
    seen = {}
    model.conv.register_forward_hook(
        lambda m, args, out: seen.update(edge_attr=args[2]))  # hooks see the user's modules
    b = _edge_batch()
    assert score_batch(model, b).shape == (3,)
    assert seen["edge_attr"] is b.edge_attr
    hook = next(h for h in model._forward_pre_hooks.values() if isinstance(h, ForwardByName))
    args = hook.arguments(b)
    assert set(args) == {"x", "edge_index", "edge_attr", "batch", "num_graphs"}
    assert args["num_graphs"] == 3 and args["batch"] is b.batch


def test_optional_batch_size_is_left_to_its_default():
    """In PyG's BasicGNN (GCN, GAT...) an optional batch_size means sampled seed nodes: passing
    the number of graphs would slice the node outputs to G rows, which look like scores."""
    model = build_model(5, ModelConfig(kwargs={"hidden_channels": 8, "num_layers": 2}),
                        "torch_geometric.nn.models:GCN")
    with pytest.raises(ScoreShapeError, match=r"shape \[13, 1\].*One score per node"):
        score_batch(model, _batch())


def test_adapting_keeps_the_users_names_and_is_idempotent():
    from custom_plugins import PyGGCN

    torch.manual_seed(0)
    plain = PyGGCN(5, 8, 1)
    keys = list(plain.state_dict())
    names = [n for n, _ in plain.named_modules()]
    adapted = adapt_forward(adapt_forward(plain))
    assert adapted is plain and len(plain._forward_pre_hooks) == 1
    assert list(plain.state_dict()) == keys and [n for n, _ in plain.named_modules()] == names
    fresh = PyGGCN(5, 8, 1)  # a checkpoint's state_dict loads into the user's own class
    fresh.load_state_dict(plain.state_dict())
    b = _batch()
    assert torch.equal(fresh(b.x, b.edge_index, b.batch), plain(b))


def test_forward_batch_models_are_not_adapted():
    for model in (GATRanker(5, ModelConfig(hidden_dim=8, heads=2)), LinearBaseline(5),
                  build_model(5, spec="custom_plugins:SumModel")):
        assert adapt_forward(model) is model and not model._forward_pre_hooks
        model.eval()
        assert torch.equal(score_batch(model, _batch()), model(_batch()))


def test_gat_ranker_ignores_model_kwargs():
    cfg = ModelConfig(hidden_dim=8, heads=2, kwargs={"hidden_channels": 64})
    torch.manual_seed(0)
    a = build_model(5, cfg, "gat")
    torch.manual_seed(0)
    b = GATRanker(5, ModelConfig(hidden_dim=8, heads=2))
    assert type(a) is GATRanker and not a._forward_pre_hooks
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_attentive_fp_is_built_from_kwargs_with_known_arguments_filled_in():
    model = build_model(5, ModelConfig(kwargs=AFP_KWARGS), AFP, edge_dim=3)
    assert (model.in_channels, model.out_channels, model.edge_dim) == (5, 1, 3)
    assert (model.hidden_channels, model.num_layers, model.num_timesteps) == (8, 2, 2)
    assert score_batch(model, _edge_batch()).shape == (3,)
    assert reads_edge_attr(model) and reads_edge_attr(AFP)


def test_a_factory_is_still_called_with_in_channels():
    from custom_plugins import SumModel

    model = build_model(7, spec="custom_plugins:make_sum_model")
    assert isinstance(model, SumModel) and model.mlp[0].in_features == 7


def test_missing_constructor_arguments_are_named_with_the_fix():
    with pytest.raises(ConfigError) as err:
        build_model(5, ModelConfig(kwargs={"hidden_channels": 8}), AFP, edge_dim=3)
    msg = str(err.value)
    assert "needs num_layers, num_timesteps" in msg and "--model-kwargs" in msg
    assert "model.kwargs" in msg and "hidden_channels" not in msg.split("needs")[1]
    with pytest.raises(ConfigError, match=r"needs hidden_channels, edge_dim, .*no edge features"):
        build_model(5, None, AFP)  # graphs without edge_attr: edge_dim cannot be filled in


def test_unknown_model_kwargs_are_named():
    with pytest.raises(ConfigError, match=r"names hiden_channels, which PyGGCN does not take"):
        build_model(5, ModelConfig(kwargs={"hiden_channels": 8}), "custom_plugins:PyGGCN")


def test_a_required_forward_argument_the_batch_lacks_is_named():
    model = build_model(5, None, "custom_plugins:EdgeAware", edge_dim=3)
    with pytest.raises(ValueError, match=r"requires 'edge_attr' but the graphs have no edge"):
        model(_batch())


def test_reads_edge_attr():
    assert not reads_edge_attr("") and not reads_edge_attr("gat")
    assert not reads_edge_attr("custom_plugins:SumModel")
    assert not reads_edge_attr("custom_plugins:make_sum_model")  # a factory: not visible
    assert reads_edge_attr("custom_plugins:EdgeAware")
    assert not reads_edge_attr(GATRanker(5))


# --------------------------------------------------------------------------- score shapes

G, N = 3, 13  # _batch(): three graphs of 4, 6 and 3 nodes


@pytest.mark.parametrize("shape", [(G,), (G, 1)])
def test_one_score_per_graph_is_accepted(shape):
    s = torch.randn(*shape)
    assert torch.equal(check_scores(s, _batch()), s.reshape(-1))


def test_a_scalar_is_one_graphs_score():
    single = Batch.from_data_list([_graph(4)])
    assert check_scores(torch.tensor(2.0), single).shape == (1,)


@pytest.mark.parametrize(
    "shape, meaning",
    [
        ((), "One score for the whole batch.*pooling without the batch vector"
             ".*global_mean_pool\\(x, batch\\)"),
        ((1,), "One score for the whole batch.*pooling without the batch vector"),
        ((1, 1), "One score for the whole batch"),
        ((N,), "One score per node.*no readout.*global_mean_pool\\(h, batch\\)"),
        ((N, 1), "One score per node.*no readout"),
        ((G, G), "broadcast.*\\[G\\] tensor combined with a \\[G, 1\\].*squeeze\\(-1\\)"),
        ((G, 4), "4 outputs per graph.*out_channels=1"),
        ((N, 4), "4 outputs per node: no readout.*out_channels=1"),
        ((2, 5, 1), "return one score per graph, shaped \\[G\\] or \\[G, 1\\]"),
    ],
)
def test_every_wrong_score_shape_says_what_it_means(shape, meaning):
    with pytest.raises(ScoreShapeError) as err:
        check_scores(torch.zeros(shape), _batch(), model=LinearBaseline(5))
    msg = str(err.value)
    assert f"model LinearBaseline returned scores of shape {list(shape)} for a batch of 3 " \
           f"graphs with 13 nodes" in msg
    assert re.search(meaning, msg), msg
    assert (err.value.shape, err.value.num_graphs, err.value.num_nodes) == (list(shape), G, N)
    assert isinstance(err.value, ValueError)


def test_scores_that_are_not_a_tensor_are_named():
    with pytest.raises(ScoreShapeError, match="returned tuple, not a tensor of scores"):
        check_scores((torch.zeros(G), None), _batch())


@pytest.mark.parametrize("spec, meaning", [("custom_plugins:NoBatchPool", "whole batch"),
                                           ("custom_plugins:PerNode", "per node")])
def test_user_models_with_the_classic_bugs_are_named(spec, meaning):
    model = build_model(5, spec=spec)
    with pytest.raises(ScoreShapeError, match=f"model {spec.split(':')[1]} returned .*{meaning}"):
        score_batch(model, _batch())
