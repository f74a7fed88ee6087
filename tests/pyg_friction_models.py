"""Models written the way PyTorch Geometric's own examples write them, for tests/test_friction.py
(imported by name: tests/ is on the path, so ``pyg_friction_models:Net`` is an import string).

- :class:`AtomEmbeddingNet`: examples/pna.py's ``Net`` on ZINC feeds integer atom types to an
  ``Embedding`` (``self.node_emb(x.squeeze())``); gatrank's node features are float.
- :class:`Net`: examples/pna.py's ``Net`` reads ``deg``, a module-level global its script sets
  from the data set; here it is set only under ``if __name__ == "__main__":``, so importing
  this module (as gatrank does for ``--model pyg_friction_models:Net``) leaves it unset.
- :func:`make_model`: the fix gatrank's message suggests, a factory that computes the value.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import global_add_pool, global_mean_pool


class AtomEmbeddingNet(nn.Module):
    """pna.py's start: an ``Embedding`` over atom types, then a readout."""

    def __init__(self) -> None:
        super().__init__()
        self.node_emb = nn.Embedding(21, 8)
        self.lin = nn.Linear(8, 1)

    def forward(self, x, edge_index, batch):
        h = self.node_emb(x.squeeze())  # integer atom types in ZINC; gatrank's x is float
        return self.lin(global_add_pool(h, batch))


class AtomicNumberNet(nn.Module):
    """The Embedding fed as gatrank's hint says for SMILES features: the atomic-number block
    of the one-hot features turned back into codes."""

    def __init__(self) -> None:
        super().__init__()
        self.node_emb = nn.Embedding(119, 8)
        self.lin = nn.Linear(8, 1)

    def forward(self, x, edge_index, batch):
        return self.lin(global_add_pool(self.node_emb(x[:, 0:119].argmax(-1)), batch))


class DegreeNet(nn.Module):
    """A model that takes the degree histogram as an argument (what ``Net`` reads globally)."""

    def __init__(self, in_channels: int, deg: torch.Tensor, out_channels: int = 1) -> None:
        super().__init__()
        self.register_buffer("deg", deg)
        self.lin = nn.Linear(in_channels, out_channels)

    def forward(self, x, edge_index, batch):
        return self.lin(global_mean_pool(x, batch))


class Net(DegreeNet):
    """pna.py's ``Net``: its constructor reads the script's global ``deg``."""

    def __init__(self, in_channels: int, out_channels: int = 1) -> None:
        super().__init__(in_channels, deg, out_channels)  # noqa: F821 - set by the script


def degree_histogram(max_degree: int = 4) -> torch.Tensor:
    """A stand-in for pna.py's histogram over the training graphs' in-degrees."""
    return torch.ones(max_degree + 1, dtype=torch.long)


def make_model(in_channels: int) -> nn.Module:
    """The factory gatrank's message suggests: ``--model pyg_friction_models:make_model``."""
    return DegreeNet(in_channels, deg=degree_histogram())


class MyGNN(nn.Module):
    """A user's model as a class: gatrank fills in ``in_channels`` and ``out_channels`` and
    applies ``model.kwargs``, whether it gets the class or its import string."""

    def __init__(self, in_channels: int, hidden_channels: int = 64, out_channels: int = 1,
                 ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.lin1 = nn.Linear(in_channels, hidden_channels)
        self.lin2 = nn.Linear(hidden_channels, out_channels)

    def forward(self, x, edge_index, batch):
        return self.lin2(global_mean_pool(self.lin1(x).relu(), batch))


class NeedsOutChannels(MyGNN):
    """Like :class:`MyGNN`, but ``out_channels`` has no default (PyG's ``GIN``, ``GCN``...)."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int = 8) -> None:
        super().__init__(in_channels, hidden_channels, out_channels)


if __name__ == "__main__":
    deg = degree_histogram()
