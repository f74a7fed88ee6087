"""What a PyTorch Geometric user meets first, with PyG's own example models
(tests/pyg_friction_models.py): each failure says what happened and what to change.

- the losses take ``[G, 1]`` scores and targets as training does, with the same gradients;
- an ``nn.Embedding`` fed gatrank's float node features says what they are and how to feed it,
  in training and in the doctor's ``user_code_error`` fix;
- a model class reading a global its script sets (pna.py's ``deg``) names the global, the line
  and the factory to write, in ``build_model``, ``train`` and the CLI;
- ``model.kwargs`` setting ``in_channels``/``edge_dim`` to another width is refused;
- a class or factory object given to ``train`` is built like its import string.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
from pyg_friction_models import AtomEmbeddingNet, MyGNN, Net
from tiny_training import tiny
from torch import nn
from torch_geometric.data import Batch, Data

from gatrank.cli import main
from gatrank.config import ConfigError, ModelConfig
from gatrank.data import GraphSet, featurize_smiles, load_graphs
from gatrank.datasets import write_dataset
from gatrank.doctor import DoctorOptions, diagnose
from gatrank.doctor.usercode import user_files, user_frame
from gatrank.losses import (
    PairwiseRankLoss,
    make_loss_fn,
    pairwise_rank_loss,
    pairwise_rank_loss_chunked,
    valid_pair_mask,
)
from gatrank.model import build_model, embedding_hint, score_batch
from gatrank.training import train

pytestmark = pytest.mark.usefixtures("one_thread")

FRICTION = Path(inspect.getsourcefile(Net)).resolve()
NO_EXTRAS = DoctorOptions(ablations=False, heldout=False, verify=False)
INDICES = "Expected tensor for argument #1 'indices'"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return write_dataset("synthetic", tmp_path_factory.mktemp("friction"), n=16, seed=0)


@pytest.fixture(scope="module")
def gs(manifest) -> GraphSet:
    """16 synthetic graphs: float32 node features 6 wide, no edge features."""
    return load_graphs(manifest)


def _overfit(**extra):
    return tiny(training__overfit_n=8, training__epochs=1, **extra)


def _molecules() -> Batch:
    return Batch.from_data_list([featurize_smiles(s) for s in ("CCO", "c1ccccc1O", "CC(=O)N")])


# --------------------------------------------------------------------------- 1. loss shapes


LOSSES = {
    "pairwise_rank_loss": lambda s, y, g: pairwise_rank_loss(s, y, group=g).loss,
    "chunked": lambda s, y, g: pairwise_rank_loss_chunked(s, y, group=g, block_rows=2).loss,
    "module": lambda s, y, g: PairwiseRankLoss(weight_by_diff=True)(s, y, g),
    "make_loss_fn": lambda s, y, g: make_loss_fn(None, tiny())(s, y, g).loss,
}


@pytest.mark.parametrize("n", [7, 300])  # 300: above CHUNK_THRESHOLD, the chunked path
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_take_g1_scores_and_targets_with_the_same_loss_and_gradients(name, n):
    gen = torch.Generator().manual_seed(n)
    y = torch.randn(n, generator=gen)
    group = torch.randint(0, 2, (n,), generator=gen)
    results = []
    for shape in ([n], [n, 1]):
        s = torch.randn(n, generator=torch.Generator().manual_seed(0)).requires_grad_()
        loss = LOSSES[name](s.view(shape), y.view(shape), group.view(shape))
        loss.backward()
        results.append((loss.detach(), s.grad))
    (flat, g_flat), (col, g_col) = results
    assert torch.equal(flat, col) and float(flat) != 0.0
    assert torch.equal(g_flat, g_col) and g_flat.abs().sum() > 0


def test_valid_pair_mask_takes_g1_targets():
    y = torch.tensor([0.0, 2.0, 1.0])
    assert torch.equal(valid_pair_mask(y.view(-1, 1)), valid_pair_mask(y))


@pytest.mark.parametrize("loss", [pairwise_rank_loss, pairwise_rank_loss_chunked])
@pytest.mark.parametrize("scores, targets, message", [
    (torch.zeros(3, 2), torch.zeros(3), r"scores must be \[B\] or \[B, 1\].*\(3, 2\): 2 columns"),
    (torch.zeros(3), torch.zeros(3, 2), r"targets must be \[B\] or \[B, 1\].*got shape \(3, 2\)"),
    (torch.zeros(3, 1, 1), torch.zeros(3), r"scores must be \[B\] or \[B, 1\].*\(3, 1, 1\)"),
    (torch.zeros(3, 1), torch.zeros(4), "same length"),
])
def test_other_score_shapes_are_named_with_what_is_accepted(loss, scores, targets, message):
    with pytest.raises(ValueError, match=message):
        loss(scores, targets)


# --------------------------------------------------------------------------- 2. Embedding


def test_an_embedding_fed_float_features_says_what_they_are_and_how_to_feed_it():
    net = build_model(177, None, "pyg_friction_models:AtomEmbeddingNet")
    with pytest.raises(RuntimeError) as err:
        score_batch(net, _molecules())
    exc = err.value
    msg = str(exc)
    assert msg.startswith(INDICES)  # torch's own message, then gatrank's hint
    assert "x is float32, 177 wide (one-hot atom features from SMILES" in msg
    assert "nn.Linear(177, <embedding size>) over x in place of the Embedding" in msg
    assert "x[:, 0:119].argmax(-1) is the atomic number" in msg
    assert exc.gatrank_hint in msg and msg.count(exc.gatrank_hint) == 1
    # the same exception, traceback and all: the user's line is still in it
    frame = user_frame(exc, user_files(AtomEmbeddingNet))
    assert frame.file == str(FRICTION) and "self.node_emb(x.squeeze())" in frame.code


def test_the_hints_fix_works_on_smiles_features():
    net = build_model(177, None, "pyg_friction_models:AtomicNumberNet")
    batch = _molecules()
    assert score_batch(net, batch).shape == (3,)
    assert batch.x[:, 0:119].argmax(-1)[:3].tolist() == [6, 6, 8]  # C, C, O: atomic numbers


@pytest.mark.parametrize("x, said", [
    (torch.eye(4)[[0, 2, 1, 3, 0, 1]], ["4 wide (one-hot, one 1 per row)", "x.argmax(-1)"]),
    (torch.tensor([[3.0], [1.0], [0.0], [2.0], [1.0], [5.0]]),
     ["1 wide (whole numbers: category codes stored as float)", "x[:, 0].long()"]),
    (torch.randn(6, 5), ["5 wide (real-valued)", "nn.Linear(5, "]),
])
def test_the_hint_reads_the_features(x, said):
    batch = Batch.from_data_list([Data(x=x[:3], edge_index=torch.zeros(2, 0, dtype=torch.long)),
                                  Data(x=x[3:], edge_index=torch.zeros(2, 0, dtype=torch.long))])
    with pytest.raises(RuntimeError) as err:
        score_batch(build_model(x.shape[1], None, AtomEmbeddingNet), batch)
    assert all(s in str(err.value) for s in said), str(err.value)
    if "real-valued" in said[0]:
        assert "argmax" not in str(err.value)


def test_other_exceptions_are_left_as_they_are():
    class Broken(nn.Module):
        def forward(self, batch):
            raise RuntimeError("my own bug")

    batch = _molecules()
    with pytest.raises(RuntimeError) as err:
        score_batch(Broken(), batch)
    assert str(err.value) == "my own bug" and not hasattr(err.value, "gatrank_hint")
    # integer indices out of range: an Embedding error, but not about gatrank's float features
    emb = nn.Embedding(3, 2)
    try:
        emb(torch.tensor([5]))
    except IndexError as exc:
        before = str(exc)
        assert embedding_hint(exc, torch.tensor([[5]])) is None and str(exc) == before


def test_training_an_embedding_model_raises_with_the_hint(gs):
    with pytest.raises(RuntimeError) as err:
        train(_overfit(), graphs=gs, model="pyg_friction_models:AtomEmbeddingNet",
              progress=False)
    assert INDICES in str(err.value)
    assert "x is float32, 6 wide (real-valued)" in str(err.value)
    assert "nn.Linear(6, <embedding size>)" in err.value.gatrank_hint


@pytest.mark.parametrize("model", ["pyg_friction_models:AtomEmbeddingNet", AtomEmbeddingNet()])
def test_the_doctor_puts_the_hint_into_the_user_code_errors_fix(gs, model):
    report = diagnose(gs, model=model, options=NO_EXTRAS)
    assert report.cause_ids == ["user_code_error"]
    (cause,) = report.causes
    assert cause.measured["frame"]["file"] == str(FRICTION)
    assert "self.node_emb(x.squeeze())" in cause.measured["frame"]["code"]
    assert cause.fix.startswith(f"In {FRICTION}, line ")
    assert "gatrank's node features are float: x is float32, 6 wide" in cause.fix
    assert "nn.Linear(6, <embedding size>) over x in place of the Embedding" in cause.fix
    assert INDICES in cause.evidence and len(cause.evidence) < 600  # the message is cut at 300


# --------------------------------------------------------------------------- 3. a script's global


def _assert_says_how_to_pass_deg(msg: str, origin: str) -> None:
    line = inspect.getsourcelines(Net.__init__)[1] + 1
    assert msg.startswith(f"building {origin} raised NameError: name 'deg' is not defined")
    assert f"({FRICTION}, line {line}, in __init__: super().__init__(in_channels, deg" in msg
    assert "module pyg_friction_models does not set when imported" in msg
    assert ("importing runs its top level only, not the code that sets deg (a script's body, "
            'under if __name__ == "__main__":)') in msg
    assert ("def make_model(in_channels): return Net(deg=...), computing deg there (e.g. from "
            "the data set) for Net to take as an argument") in msg
    assert "--model pyg_friction_models:make_model" in msg
    assert "in a notebook or script that sets deg, pass the model instance or its class" in msg


def test_a_global_the_script_sets_is_named_with_the_fix():
    with pytest.raises(ConfigError) as err:
        build_model(6, None, "pyg_friction_models:Net")
    _assert_says_how_to_pass_deg(str(err.value),
                                 "the model from the import string pyg_friction_models:Net")
    assert isinstance(err.value.__cause__, NameError) and err.value.__cause__.name == "deg"
    with pytest.raises(ConfigError) as err:
        build_model(6, None, Net)  # the class itself, imported from its module
    _assert_says_how_to_pass_deg(str(err.value), "model Net")
    # the factory the message suggests builds it
    assert build_model(6, None, "pyg_friction_models:make_model").deg.shape == (5,)


def test_a_misspelt_global_gets_the_line_too():
    class Typo(nn.Module):
        def __init__(self, in_channels):
            super().__init__()
            self.lin = nn.Linear(in_channels, undefined_width)  # noqa: F821

    with pytest.raises(ConfigError, match=r"NameError: name 'undefined_width' is not defined "
                                          r"\(.*test_friction.py, line \d+, in __init__: "
                                          r"self.lin = nn.Linear.*unless the name is misspelt "
                                          r"\(then fix that line\)"):
        build_model(6, None, Typo)


def test_other_name_errors_are_left_as_they_are():
    def unbound(in_channels):
        if in_channels > 100:
            width = 1
        return nn.Linear(in_channels, width)

    with pytest.raises(UnboundLocalError):
        build_model(6, None, unbound)

    def free(in_channels):
        def inner():
            return width
        inner_result = inner()
        width = 1
        return nn.Linear(in_channels, inner_result + width)

    with pytest.raises(NameError, match="free variable") as err:
        build_model(6, None, free)
    assert type(err.value) is NameError
    # a class of __main__ (a notebook's cell): the global is the notebook's to set
    ns = {"__name__": "__main__", "nn": nn}
    exec("class Cell(nn.Module):\n    def __init__(self, in_channels):\n"
         "        super().__init__()\n        self.lin = nn.Linear(in_channels, deg)\n", ns)
    with pytest.raises(NameError, match="name 'deg' is not defined") as err:
        build_model(6, None, ns["Cell"])
    assert type(err.value) is NameError


def test_train_and_the_cli_say_it_too(gs, manifest, capsys):
    with pytest.raises(ConfigError, match=r"^building the model from the import string pyg_fr"):
        train(_overfit(), graphs=gs, model="pyg_friction_models:Net", progress=False)
    code = main(["train", "--manifest", str(manifest), "--model", "pyg_friction_models:Net",
                 "--overfit-n", "8", "--epochs", "2", "--no-progress", "--no-baseline", "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("gatrank train: config error:\nbuilding the model from the import "
                          "string pyg_friction_models:Net raised NameError: name 'deg' is not")
    assert "Traceback" not in err and "--model pyg_friction_models:make_model" in err


def test_the_doctor_stops_with_the_message(gs):
    with pytest.raises(ConfigError, match="does not set when imported"):
        diagnose(gs, model="pyg_friction_models:Net", options=NO_EXTRAS)


# --------------------------------------------------------------------------- 4. widths in kwargs


@pytest.mark.parametrize("kwargs, edge_dim, said", [
    ({"in_channels": 16}, 3, "sets in_channels=16, but the graphs' node features are 6 wide "
                             "(edge features 3 wide). gatrank fills in in_channels from the "
                             "graphs (in_channels=6): leave in_channels out of the kwargs."),
    ({"in_channels": 16}, None, "node features are 6 wide. gatrank fills in in_channels"),
    ({"edge_dim": 4}, 3, "sets edge_dim=4, but the graphs' edge features are 3 wide. gatrank "
                         "fills in edge_dim from the graphs (edge_dim=3)"),
])
def test_model_kwargs_setting_another_width_are_refused(kwargs, edge_dim, said):
    spec = "torch_geometric.nn.models:AttentiveFP"
    afp = {"hidden_channels": 8, "num_layers": 2, "num_timesteps": 2, **kwargs}
    with pytest.raises(ConfigError) as err:
        build_model(6, ModelConfig(kwargs=afp), spec, edge_dim=edge_dim)
    assert str(err.value).startswith(f"--model {spec}: model.kwargs (--model-kwargs) sets ")
    assert said in str(err.value)


def test_model_kwargs_with_the_graphs_widths_are_accepted():
    afp = {"hidden_channels": 8, "num_layers": 2, "num_timesteps": 2}
    model = build_model(6, ModelConfig(kwargs={**afp, "in_channels": 6, "edge_dim": 3}),
                        "torch_geometric.nn.models:AttentiveFP", edge_dim=3)
    assert (model.in_channels, model.edge_dim) == (6, 3)
    # graphs without edge features: an edge_dim in kwargs is the model's to use
    assert build_model(6, ModelConfig(kwargs={**afp, "edge_dim": 2}),
                       "torch_geometric.nn.models:AttentiveFP").edge_dim == 2


def test_train_refuses_another_in_channels(gs):
    cfg = _overfit(model__kwargs={"in_channels": 9})
    with pytest.raises(ConfigError, match="sets in_channels=9, but the graphs' node features "
                                          "are 6 wide"):
        train(cfg, graphs=gs, model="pyg_friction_models:MyGNN", progress=False)


# --------------------------------------------------------------------------- 5. class objects


def test_a_class_is_built_like_its_import_string(gs):
    cfg = _overfit(model__kwargs={"hidden_channels": 8})
    by_class = train(cfg, graphs=gs, model=MyGNN, progress=False)
    by_string = train(cfg, graphs=gs, model="pyg_friction_models:MyGNN", progress=False)
    assert isinstance(by_class.model, MyGNN) and by_class.model.hidden_channels == 8
    a, b = by_class.model.state_dict(), by_string.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert by_class.history[-1]["loss"] == by_string.history[-1]["loss"]
    # out_channels without a default is filled in, as for an import string
    from pyg_friction_models import NeedsOutChannels

    net = train(_overfit(), graphs=gs, model=NeedsOutChannels, progress=False).model
    assert net.lin2.out_features == 1


def test_a_class_gets_the_import_strings_messages_by_its_name(gs):
    with pytest.raises(ConfigError, match=r"^model MyGNN: model.kwargs \(--model-kwargs\) names "
                                          r"hiden_channels, which MyGNN does not take"):
        train(_overfit(model__kwargs={"hiden_channels": 8}), graphs=gs, model=MyGNN,
              progress=False)

    def needs_depth(in_channels, depth):
        return MyGNN(in_channels)

    with pytest.raises(ConfigError, match=r"model .*needs_depth\(in_channels, depth\) needs "
                                          r"depth\. Pass depth in --model-kwargs"):
        train(_overfit(), graphs=gs, model=needs_depth, progress=False)


def test_factories_and_lambdas_are_still_called_with_in_channels(gs):
    seen = []

    def factory(width):
        seen.append(width)
        return MyGNN(width, 4)

    class Capture:  # a factory object that builds its model itself, from its own config
        def __call__(self, in_channels: int) -> nn.Module:
            seen.append(in_channels)
            return build_model(in_channels, cfg.model, "pyg_friction_models:MyGNN")

    cfg = _overfit(model__kwargs={"hidden_channels": 4})  # MyGNN's, not the factories'
    for model in (factory, lambda n: MyGNN(n, 4), Capture()):
        res = train(cfg, graphs=gs, model=model, progress=False)
        assert res.model.hidden_channels == 4 and math.isfinite(res.history[-1]["loss"])
    assert seen == [6, 6]

    def with_options(in_channels, hidden_channels=64):  # takes kwargs of its own: gets them
        return MyGNN(in_channels, hidden_channels)

    assert train(cfg, graphs=gs, model=with_options, progress=False).model.hidden_channels == 4


def test_a_module_instance_is_used_as_it_is(gs):
    net = MyGNN(6, 4)
    assert train(_overfit(), graphs=gs, model=net, progress=False).model is net
