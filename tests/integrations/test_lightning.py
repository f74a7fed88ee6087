"""gatrank.integrations.lightning: a LightningModule trained with the MonitorCallback gets the
records a plain loop with gatrank.Monitor gets for the same training (same model, data order and
optimizer), and the same verdict; a training_step that returns no scores is told what to
return."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.loader import DataLoader

lightning = pytest.importorskip("lightning.pytorch")

from gatrank import Monitor  # noqa: E402
from gatrank.config import ModelConfig  # noqa: E402
from gatrank.integrations.lightning import MonitorCallback, monitored_module  # noqa: E402
from gatrank.losses import pairwise_rank_loss  # noqa: E402
from gatrank.model import GATRanker  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS, LR = 5, 0.03


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


def _trainer(callback) -> lightning.Trainer:
    return lightning.Trainer(max_epochs=EPOCHS, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             accelerator="cpu", callbacks=[callback])


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
    with pytest.raises(ValueError, match=r"return a dict with 'loss', 'scores'"):
        _trainer(MonitorCallback()).fit(Ranker(_model(graphs), returns="loss"),
                                         _loader(graphs))


def test_the_monitored_module_is_the_child_holding_every_parameter(make_graphs):
    ranker = Ranker(_model(make_graphs()))
    assert monitored_module(ranker) is ranker.model
    assert monitored_module(ranker, ".") is ranker
    assert monitored_module(ranker, "model.score_head") is ranker.model.score_head
