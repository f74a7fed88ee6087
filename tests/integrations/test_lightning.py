"""gatrank.integrations.lightning: a LightningModule trained with the MonitorCallback gets the
records a plain loop with gatrank.Monitor gets for the same training (same model, data order and
optimizer), and the same verdict; a training_step that returns no scores is told what to
return. The loop bugs a LightningModule can hold are named by the doctor, and the same set-ups
without the bug get no loop cause; validation lands in its epoch's record; the hooks leave the
model when fit ends."""

from __future__ import annotations

import pytest
import torch
import torch.utils.data
from torch.optim.lr_scheduler import StepLR
from torch_geometric.loader import DataLoader

lightning = pytest.importorskip("lightning.pytorch")

from gatrank import Monitor  # noqa: E402
from gatrank.config import ModelConfig  # noqa: E402
from gatrank.doctor.loop_causes import LOOP_CAUSES  # noqa: E402
from gatrank.integrations.lightning import MonitorCallback, monitored_module  # noqa: E402
from gatrank.losses import pairwise_rank_loss  # noqa: E402
from gatrank.metrics import ranking_metrics  # noqa: E402
from gatrank.model import GATRanker  # noqa: E402

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no")]

EPOCHS, LR = 5, 0.03
LOOP_EPOCHS = 10
"""Long enough for a healthy user loop to pass the overfit test, and for a StepLR stepped per
batch to spend most of its steps below 1% of its peak."""
SEEDS = (0, 1, 2)


def _model(graphs) -> GATRanker:
    torch.manual_seed(0)
    return GATRanker(graphs[0].num_features,
                     ModelConfig(hidden_dim=8, heads=2, num_layers=2, dropout=0.0))


def _loader(graphs) -> DataLoader:
    # a fixed order: Lightning draws from a shuffling loader's generator differently from a
    # plain `for batch in loader`, which is no concern of the Monitor's
    return DataLoader(list(graphs), batch_size=4, shuffle=False)


class Ranker(lightning.LightningModule):
    """A user's LightningModule following the callback's contract."""

    def __init__(self, model, returns: str = "dict") -> None:
        super().__init__()
        self.model, self.returns = model, returns

    def training_step(self, batch, batch_idx):
        scores = self.model(batch)
        loss = pairwise_rank_loss(scores, batch.y).loss
        if self.returns == "loss":
            return loss
        return {"loss": loss, "scores": scores, "targets": batch.y}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=LR)


def _trainer(callback, epochs: int = EPOCHS, **kwargs) -> lightning.Trainer:
    return lightning.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             accelerator="cpu", callbacks=[callback], **kwargs)


def _plain(graphs) -> Monitor:
    """The same training as a plain loop with the Monitor."""
    model = _model(graphs)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    monitor = Monitor(model, optimizer=optimizer, log_every=2, epochs=EPOCHS)
    for _ in range(EPOCHS):
        for batch in _loader(graphs):
            scores = model(batch)
            loss = pairwise_rank_loss(scores, batch.y).loss
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            optimizer.step()
        monitor.end_epoch()
    return monitor


def _hooks(model) -> int:
    """Forward pre-hooks on the model and in PyTorch's global table, gradient hooks on its
    parameters."""
    return (len(model._forward_pre_hooks) + len(torch.nn.modules.module._global_forward_pre_hooks)
            + sum(len(p._backward_hooks or {}) for p in model.parameters()))


def _strip(history):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in history]


def test_the_callback_records_what_the_plain_loop_records(make_graphs, tmp_path):
    graphs = make_graphs(k=8)
    callback = MonitorCallback(log_every=2, out_dir=tmp_path / "run")
    _trainer(callback).fit(Ranker(_model(graphs)), _loader(graphs))
    plain = _plain(graphs)
    assert [r["epoch"] for r in callback.history] == [1, 2, 4, 5]  # the last from max_epochs
    assert _strip(callback.history) == _strip(plain.history)  # the same training, exactly
    assert "convs.0" in callback.history[0]["grad_norm_per_layer"]  # named inside self.model
    assert callback.verdict().to_dict() == plain.verdict().to_dict()
    assert callback.diagnose().verdict == plain.diagnose().verdict
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 4


def test_a_training_step_without_scores_is_told_the_contract(make_graphs):
    graphs = make_graphs(k=8)
    ranker = Ranker(_model(graphs), returns="loss")
    before = _hooks(ranker.model)
    with pytest.raises(ValueError, match=r"return a dict with 'loss', 'scores'"):
        _trainer(MonitorCallback()).fit(ranker, _loader(graphs))
    assert _hooks(ranker.model) == before  # the Monitor's hooks leave on the exception too


def test_the_monitored_module_is_the_child_holding_every_parameter(make_graphs):
    ranker = Ranker(_model(make_graphs()))
    assert monitored_module(ranker) is ranker.model
    assert monitored_module(ranker, ".") is ranker
    assert monitored_module(ranker, "model.score_head") is ranker.model.score_head


class UserRanker(lightning.LightningModule):
    """A user's LightningModule that owns its data (a shuffling loader of batch 4: 2 steps per
    epoch) and its optimizer, with the loop bugs users write in Lightning as options.

    Args:
        targets: "batch" (batch.y), or "by_position" (BUG: a target array indexed by batch
            position while the loader shuffles).
        loader: "shuffled", or "first_batch" (BUG: the first batch served at every step).
        interval: a StepLR halving the lr, stepped per "epoch" or per "step" (BUG: a per-epoch
            scheduler stepped per batch); None: no scheduler.
        keep_grads: BUG: optimizer_zero_grad overridden to do nothing, so every step's
            gradient adds to the ones before.
        sgd: SGD rather than Adam (whose update does not shrink with clipped gradients).
        val_targets: validation_step returns its targets (else batch.y is read).
    """

    def __init__(self, graphs, *, seed: int = 0, targets: str = "batch",
                 loader: str = "shuffled", interval: str | None = None,
                 keep_grads: bool = False, sgd: bool = False, val_targets: bool = True) -> None:
        super().__init__()
        self.model, self.graphs, self.seed = _model(graphs), graphs, seed
        self.targets, self.loader, self.interval = targets, loader, interval
        self.keep_grads, self.sgd, self.val_targets = keep_grads, sgd, val_targets
        self.y_all = torch.cat([g.y for g in graphs])  # [G], file order
        self.validated: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        """Epoch (1-based) -> the (scores, y) each validation_step of that epoch computed."""

    def train_dataloader(self):
        if self.loader == "first_batch":
            first = next(iter(DataLoader(self.graphs, batch_size=4)))
            return torch.utils.data.DataLoader([first] * 2, batch_size=None)  # BUG
        return DataLoader(self.graphs, batch_size=4, shuffle=True,
                          generator=torch.Generator().manual_seed(self.seed))

    def training_step(self, batch, batch_idx):
        scores = self.model(batch)
        y = batch.y
        if self.targets == "by_position":
            y = self.y_all[batch_idx * 4:(batch_idx + 1) * 4]  # BUG
        loss = pairwise_rank_loss(scores, y).loss
        return {"loss": loss, "scores": scores, "targets": y}

    def validation_step(self, batch, batch_idx):
        scores = self.model(batch)
        if not self.trainer.sanity_checking:
            self.validated.setdefault(self.current_epoch + 1, []).append((scores, batch.y))
        return {"scores": scores, "targets": batch.y} if self.val_targets else {"scores": scores}

    def optimizer_zero_grad(self, epoch, batch_idx, optimizer):
        if not self.keep_grads:
            optimizer.zero_grad()

    def configure_optimizers(self):
        optimizer = (torch.optim.SGD(self.parameters(), lr=LR) if self.sgd
                     else torch.optim.Adam(self.parameters(), lr=LR))
        if self.interval is None:
            return optimizer
        scheduler = StepLR(optimizer, step_size=1, gamma=0.5)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": self.interval}}


def _fit(graphs, seed: int, *, clip: float | None = None, accumulate: int = 1,
         **module) -> tuple[MonitorCallback, UserRanker]:
    """A UserRanker trained for LOOP_EPOCHS under the callback."""
    callback = MonitorCallback(log_every=2)
    ranker = UserRanker(graphs, seed=seed, **module)
    _trainer(callback, LOOP_EPOCHS, gradient_clip_val=clip,
             accumulate_grad_batches=accumulate).fit(ranker)
    return callback, ranker


BUGS = {  # cause id: the LightningModule (and Trainer) set-up with the bug
    "targets_misaligned": {"targets": "by_position"},
    "same_batch": {"loader": "first_batch"},
    "lr_schedule_collapse": {"interval": "step"},
    "gradients_accumulate": {"keep_grads": True},
    "gradients_clipped_away": {"sgd": True, "clip": 1e-7},
}
TWINS = {  # cause id: the same set-up without the bug, where it is not UserRanker's default
    "lr_schedule_collapse": {"interval": "epoch"},
    "gradients_accumulate": {"accumulate": 2},  # Lightning's: zero_grad every 2nd batch
    "gradients_clipped_away": {"sgd": True, "clip": 1.0},
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cause", list(BUGS))
def test_a_loop_bug_in_a_lightning_module_is_named(make_graphs, cause, seed):
    callback, _ = _fit(make_graphs(k=8, seed=seed), seed, **BUGS[cause])
    report = callback.diagnose()
    assert cause in report.cause_ids[:2]
    assert report.verdict == "broken_loop"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_healthy_lightning_module_is_healthy(make_graphs, seed):
    callback, _ = _fit(make_graphs(k=8, seed=seed), seed)
    report = callback.diagnose()
    assert report.verdict == "healthy" and not report.causes


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cause", list(TWINS))
def test_the_same_set_up_without_the_bug_gets_no_loop_cause(make_graphs, cause, seed):
    callback, _ = _fit(make_graphs(k=8, seed=seed), seed, **TWINS[cause])
    report = callback.diagnose()
    assert not set(report.cause_ids) & set(LOOP_CAUSES)
    assert report.verdict != "broken_loop"


@pytest.mark.parametrize("val_targets", [True, False])
def test_validation_lands_in_the_record_of_its_epoch(make_graphs, val_targets):
    callback = MonitorCallback(log_every=2)
    ranker = UserRanker(make_graphs(k=8), val_targets=val_targets)
    val = DataLoader(make_graphs(k=8, seed=1), batch_size=4)
    _trainer(callback, LOOP_EPOCHS).fit(ranker, val_dataloaders=val)
    assert [r["epoch"] for r in callback.history] == [1, 2, 4, 6, 8, 10]
    for record in callback.history:
        scores, y = zip(*ranker.validated[record["epoch"]], strict=True)
        expected = {f"val_{k}": v for k, v in ranking_metrics(
            torch.cat(scores).float(), torch.cat(y).float()).items()}
        assert {k: record[k] for k in expected} == expected  # the epoch's own validation


def test_validation_outside_the_epochs_of_a_fit_is_not_recorded(make_graphs, monkeypatch):
    """A second fit's sanity check and trainer.validate() run while the callback still holds
    the last fit's Monitor."""
    callback = MonitorCallback(log_every=2)
    ranker = UserRanker(make_graphs(k=8))
    val = DataLoader(make_graphs(k=8, seed=1), batch_size=4)
    _trainer(callback, 1).fit(ranker, val_dataloaders=val)
    last = callback.monitor

    def fed(*_):
        raise AssertionError("validation outside a fit's epochs reached the Monitor")

    monkeypatch.setattr(last, "validation", fed)
    _trainer(callback, 1).validate(ranker, val)
    _trainer(callback, 1).fit(ranker, val_dataloaders=val)
    assert callback.monitor is not last and "val_spearman" in callback.history[0]


def test_the_hooks_leave_the_model_when_training_ends(make_graphs):
    callback, ranker = MonitorCallback(log_every=2), UserRanker(make_graphs(k=8))
    before = _hooks(ranker.model)
    _trainer(callback, LOOP_EPOCHS).fit(ranker)
    optimizer = callback.monitor.optimizer
    assert not ranker.model._forward_pre_hooks and _hooks(ranker.model) == before
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks
    assert callback.diagnose().verdict == "healthy"  # the records stay readable


def test_clipping_away_under_gradient_accumulation_is_named(make_graphs):
    callback, _ = _fit(make_graphs(k=8), 0, sgd=True, clip=1e-7, accumulate=2)
    assert "gradients_clipped_away" in callback.diagnose().cause_ids[:2]
