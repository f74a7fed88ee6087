"""The Monitor's recording (gatrank.training.monitor.LoopRecorder): the records of a user's loop
have gatrank train's keys and, for the same loop, its values; it changes nothing in training;
it names parameters without gradients and the step of a non-finite loss; it counts the graphs
an epoch trains on and records the validation scores the loop passes; its metrics.jsonl is
what `gatrank verdict` judges."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from tiny_training import tiny
from torch import nn
from torch_geometric.loader import DataLoader

from gatrank.cli import main
from gatrank.config import ModelConfig, overfit_config
from gatrank.losses import pairwise_rank_loss
from gatrank.metrics import pairwise_accuracy, ranking_metrics, spearman
from gatrank.model import GATRanker
from gatrank.training import train
from gatrank.training.history import read_history
from gatrank.training.monitor import LoopRecorder, NonFiniteStep
from gatrank.training.setup import set_up

pytestmark = pytest.mark.usefixtures("one_thread")

NOT_IN_A_USER_LOOP = {"emb_mean", "emb_std", "emb_graph_std"}
"""gatrank train's keys a user's loop cannot give: the pooled-embedding spread needs a forward
pass of gatrank's own (model.embed on the training set) that the Monitor never makes."""


def _model(graphs, dropout: float = 0.3, seed: int = 0) -> GATRanker:
    torch.manual_seed(seed)
    return GATRanker(graphs[0].num_features,
                     ModelConfig(hidden_dim=8, heads=2, num_layers=2, dropout=dropout))


def _user_loop(model, graphs, epochs: int, recorder: LoopRecorder | None = None, *,
               lr: float = 0.01, loss_fn=None) -> torch.optim.Optimizer:
    """The issue's loop: shuffled batches, backward, the Monitor's step, clipping, Adam."""
    optimizer = (recorder.optimizer if recorder is not None and recorder.optimizer
                 else torch.optim.Adam(model.parameters(), lr=lr))
    loader = DataLoader(list(graphs), batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(1))
    loss_fn = loss_fn or (lambda s, y: pairwise_rank_loss(s, y).loss)
    for _ in range(epochs):
        model.train()
        for batch in loader:
            scores = model(batch)
            loss = loss_fn(scores, batch.y)
            optimizer.zero_grad()
            loss.backward()
            if recorder is not None:
                recorder.step(scores, batch.y, loss)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        if recorder is not None:
            recorder.end_epoch()
    return optimizer


def test_records_have_gatrank_trains_keys_and_values_for_the_same_loop(graphs):
    """gatrank train's overfit loop rebuilt by hand from its own set-up, with the recorder in
    it: the same keys, and the same loss, gradient norms, pair counts and learning rate."""
    cfg = overfit_config(tiny(), 12).updated({"training.epochs": 3, "training.log_every": 2})
    reference = train(cfg, graphs=graphs, progress=False).history
    s = set_up(cfg, graphs=graphs, model=None, loss=None, splits=None, out_dir=None)
    rec = LoopRecorder(s.net, optimizer=s.optimizer, log_every=2, epochs=3)
    for _ in range(3):
        s.net.train()
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # this epoch's (scores, targets)
        for batch in s.fixed_batches or s.loader:
            s.optimizer.zero_grad(set_to_none=True)
            scores = s.train_net(batch).reshape(-1)
            lo = s.loss_fn(scores, batch.y.reshape(-1), None)
            lo.loss.backward()
            rec.step(scores, batch.y, lo.loss)
            seen.append((scores.detach().clone(), batch.y.clone()))
            torch.nn.utils.clip_grad_norm_(s.net.parameters(), s.tc.grad_clip)
            s.optimizer.step()
        rec.end_epoch()
    assert [r["epoch"] for r in rec.history] == [r["epoch"] for r in reference] == [1, 2, 3]
    for mine, theirs in zip(rec.history, reference, strict=True):
        # the same keys in the same order, and the count of non-finite steps the loop applied
        assert [k for k in mine if k != "nonfinite_steps"] == \
            [k for k in theirs if k not in NOT_IN_A_USER_LOOP]
        for key in ("loss", "grad_norm", "valid_pairs_mean", "valid_pairs_min",
                    "batches_without_pairs", "skipped_steps", "lr"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-6), key
        assert mine["grad_norm_per_layer"] == pytest.approx(theirs["grad_norm_per_layer"])
    # the ranking metrics are over the scores the loop computed in the epoch (an oracle:
    # metrics.py on what the loop saw), not gatrank's eval-mode rescoring after it
    last_scores, last_y = (torch.cat(t) for t in zip(*seen, strict=True))
    assert rec.history[-1]["pairwise_accuracy"] == pairwise_accuracy(last_scores, last_y)
    assert rec.history[-1]["spearman"] == pytest.approx(spearman(last_scores, last_y))
    assert rec.history[-1]["score_std"] == pytest.approx(float(last_scores.double().std(
        unbiased=False)))


def test_recording_never_changes_training(make_graphs):
    """One seeded loop (dropout on, shuffled batches) with and without the recorder at its
    most active (a record every epoch, the loop's mechanics watched through hooks on the
    optimizer, the model and its parameters): bitwise-equal weights, gradients, optimizer state
    and RNG state after it."""
    graphs = make_graphs(k=10, n=5, f=4, seed=3)
    results = []
    for with_recorder in (False, True):
        torch.manual_seed(7)
        model = _model(graphs, dropout=0.3)
        rec = LoopRecorder(model, optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
                           log_every=1, watch=True) if with_recorder else None
        opt = _user_loop(model, graphs, epochs=4, recorder=rec)
        results.append((model, opt, torch.get_rng_state(), model.training))
        if rec is not None:
            assert len(rec.history) == 4
            watched = rec.watch.summary()  # it did watch: every step, every optimizer step
            assert watched["steps"] == watched["optimizer_steps"] == 4 * 3
            assert watched["resets"]["checked"] > 0 and watched["grads"]["pairs"] > 0
    (m0, o0, rng0, tr0), (m1, o1, rng1, tr1) = results
    for (name, p0), p1 in zip(m0.named_parameters(), m1.parameters(), strict=True):
        assert torch.equal(p0, p1), name
        assert torch.equal(p0.grad, p1.grad), name
    for s0, s1 in zip(o0.state.values(), o1.state.values(), strict=True):
        assert all(torch.equal(s0[k], s1[k]) for k in s0)
    assert torch.equal(rng0, rng1) and tr0 == tr1 is True


class _WithUnusedLayer(nn.Module):
    """A GAT ranker with a layer forward() never calls."""

    def __init__(self, graphs) -> None:
        super().__init__()
        self.net = _model(graphs, dropout=0.0)
        self.forgotten = nn.Linear(3, 3)

    def forward(self, batch):
        return self.net(batch)


def test_parameters_whose_gradient_is_always_none_are_named(make_graphs, caplog):
    graphs = make_graphs(k=8)
    model = _WithUnusedLayer(graphs)
    rec = LoopRecorder(model, log_every=5)
    with caplog.at_level(logging.WARNING, logger="gatrank.training.monitor"):
        _user_loop(model, graphs, epochs=2, recorder=rec)
    assert rec.never_grad == ["forgotten.weight", "forgotten.bias"]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "forgotten.weight, forgotten.bias" in warned[0]
    assert "epoch 1" in warned[0]


class _NanAt:
    """The pairwise loss, NaN at the given (0-based) calls; its gradient stays finite (NaN is
    added as a constant), so the weights do not turn NaN and later steps stay finite."""

    def __init__(self, calls: set[int]) -> None:
        self.calls, self.n = calls, -1

    def __call__(self, scores, targets):
        self.n += 1
        loss = pairwise_rank_loss(scores, targets).loss
        return loss + float("nan") if self.n in self.calls else loss


def test_a_non_finite_loss_is_named_at_its_epoch_and_step(make_graphs, caplog):
    graphs = make_graphs(k=8)  # two batches of 4 per epoch
    model = _model(graphs, dropout=0.0)
    rec = LoopRecorder(model, log_every=1)
    with caplog.at_level(logging.WARNING, logger="gatrank.training.monitor"):
        # calls 3 and 5: epoch 2 batch 1, epoch 3 batch 1
        _user_loop(model, graphs, epochs=3, recorder=rec, loss_fn=_NanAt({3, 5}))
    assert rec.nonfinite[0] == NonFiniteStep(epoch=2, step=1, loss=rec.nonfinite[0].loss)
    assert [(s.epoch, s.step) for s in rec.nonfinite] == [(2, 1), (3, 1)]
    assert math.isnan(rec.nonfinite[0].loss)
    assert [r["nonfinite_steps"] for r in rec.history] == [0, 1, 2]
    assert math.isfinite(rec.history[0]["loss"]) and math.isnan(rec.history[1]["loss"])
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "epoch 2, batch 1" in warned[0]


def test_only_logged_epochs_are_recorded_and_the_last_when_known(make_graphs):
    graphs = make_graphs(k=6)
    model = _model(graphs, dropout=0.0)
    rec = LoopRecorder(model, log_every=3, epochs=7)
    _user_loop(model, graphs, epochs=7, recorder=rec)
    assert [r["epoch"] for r in rec.history] == [1, 3, 6, 7]
    assert "lr" not in rec.history[0]  # no optimizer given: not known


def test_bad_arguments_are_named(make_graphs):
    model = _model(make_graphs(), dropout=0.0)
    with pytest.raises(ValueError, match="log_every = 0"):
        LoopRecorder(model, log_every=0)
    rec = LoopRecorder(model)
    with pytest.raises(ValueError, match=r"3 scores for 4 targets"):
        rec.step(torch.zeros(3), torch.zeros(4), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"loss has shape \(4,\)"):
        rec.step(torch.zeros(4), torch.zeros(4), torch.ones(4))


def test_its_metrics_jsonl_is_what_gatrank_verdict_judges(make_graphs, tmp_path, capsys):
    graphs = make_graphs(k=8)
    model = _model(graphs, dropout=0.0)
    rec = LoopRecorder(model, log_every=5, epochs=20, out_dir=tmp_path / "mine")
    _user_loop(model, graphs, epochs=20, recorder=rec, lr=0.03)
    on_disk = [json.loads(line) for line in
               (tmp_path / "mine" / "metrics.jsonl").read_text().splitlines()]
    assert on_disk == rec.history == read_history(tmp_path / "mine")
    assert [r["epoch"] for r in on_disk] == [1, 5, 10, 15, 20]
    from gatrank.checks.verdict import evaluate_verdict

    passed = evaluate_verdict(rec.history).passed
    assert main(["verdict", str(tmp_path / "mine")]) == (0 if passed else 1)
    out = capsys.readouterr().out
    assert "verdict: PASS" in out if passed else "verdict: FAIL" in out
    assert "the doctor's reading" in out


def _steps(rec: LoopRecorder, model: nn.Module, sizes, gen: torch.Generator) -> None:
    """One epoch's steps with batches of ``sizes`` graphs (a real backward, then the step)."""
    for n in sizes:
        y = torch.randn(n, generator=gen)
        scores = model(torch.randn(n, 4, generator=gen))  # [G, 1], as many models return
        loss = pairwise_rank_loss(scores.reshape(-1), y).loss
        model.zero_grad()
        loss.backward()
        rec.step(scores, y, loss)


def test_the_graphs_of_every_epoch_are_counted_logged_or_not():
    model, gen = nn.Linear(4, 1), torch.Generator().manual_seed(0)
    rec = LoopRecorder(model, log_every=5)
    assert rec.graphs_per_epoch is None
    _steps(rec, model, [20, 20, 20, 10], gen)  # epoch 1, logged
    rec.end_epoch()
    assert rec.graphs_per_epoch == 70
    _steps(rec, model, [20, 20, 20, 20, 20], gen)  # epoch 2, not logged: still counted
    assert rec.end_epoch() is None and rec.graphs_per_epoch == 100
    _steps(rec, model, [20, 10], gen)  # a shorter epoch (a loop stopped early) keeps the most
    rec.end_epoch()
    assert rec.graphs_per_epoch == 100
    assert all("graphs" not in k for r in rec.history for k in r)  # train's keys only


def test_validation_scores_become_the_records_val_keys():
    """Two validation batches of a logged epoch, pooled: the record's val_* are
    ranking_metrics of all of them (gatrank train's validation keys), after time_s; a
    validation in an epoch without a record is not kept."""
    model, gen = nn.Linear(4, 1), torch.Generator().manual_seed(0)
    rec = LoopRecorder(model, log_every=2)
    _steps(rec, model, [8, 8], gen)
    vy = torch.randn(30, generator=gen)
    vs = 0.8 * vy + torch.randn(30, generator=gen)
    rec.observe_validation(vs[:20].reshape(-1, 1), vy[:20])
    rec.observe_validation(vs[20:], vy[20:])
    record = rec.end_epoch()
    expected = {f"val_{k}": v for k, v in ranking_metrics(vs, vy).items()}
    assert {k: record[k] for k in expected} == pytest.approx(expected)
    assert record["val_pairwise_accuracy"] == pytest.approx(pairwise_accuracy(vs, vy))
    keys = list(record)
    assert keys[keys.index("time_s") + 1:keys.index("time_s") + 1 + len(expected)] == \
        list(expected)
    _steps(rec, model, [8, 8], gen)  # epoch 2: logged, no validation passed
    assert not any(k.startswith("val_") for k in rec.end_epoch())
    _steps(rec, model, [8, 8], gen)  # epoch 3: not logged, so its validation is not kept
    rec.observe_validation(vs, vy)
    assert rec.end_epoch() is None
    _steps(rec, model, [8, 8], gen)  # epoch 4: logged
    with pytest.raises(ValueError, match=r"monitor.validation: 3 scores for 4 targets"):
        rec.observe_validation(torch.zeros(3), torch.zeros(4))
