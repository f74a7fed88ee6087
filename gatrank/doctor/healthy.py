"""The healthy zoo: set-ups users really run, each healthy, beside the fault zoo.

A diagnostic tool is judged as much by what it does not say. Each :class:`Healthy` set-up is a
model, loss, data set and settings that trains well (PyTorch Geometric's own graph-level
examples changed only to give one score per graph, the ranking losses users write, a PyG
dataset made with ``from_smiles``, groups, the embedded data sets): on every seed the doctor
must name no cause. :func:`healthy_graphs` builds a set-up's graphs, :func:`diagnose_healthy`
runs the doctor on it as a user would call it; the zoo test and ``gatrank doctor --zoo-table``
run them all.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gatrank.config import Config, nest
from gatrank.datasets import DEFAULT_DATASET

__all__ = [
    "Healthy",
    "HEALTHY",
    "healthy_graphs",
    "diagnose_healthy",
]

_EX = "gatrank.doctor.pyg_examples"


@dataclass(frozen=True)
class Healthy:
    """A healthy set-up.

    Attributes:
        name: the set-up's name.
        description: what it is, with its source.
        data: an embedded data set (``chembl-activity``...), ``synthetic-groups`` (the
            synthetic set with 16 groups) or ``pyg:SPEC`` (a PyG dataset by import string).
        model: the user's model by import string (None: gatrank's GAT).
        loss: the user's loss by import string (None: gatrank's pairwise loss).
        config: the user's own settings (dotted keys), as a user sets them.
        target_scale: targets multiplied by this (a narrow target range).
    """

    name: str
    description: str
    data: str = DEFAULT_DATASET
    model: str | None = None
    loss: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    target_scale: float = 1.0


_ZOO = [
    Healthy("gin_dropout_head", "GIN of PyG's examples/mutag_gin.py: 5 GIN layers, sum "
            "readout, an MLP head with dropout 0.5; lr 0.01, batch 128",
            model=f"{_EX}:GIN",
            config={"training.learning_rate": 0.01, "training.batch_size": 128}),
    Healthy("sage_max_readout", "GraphSAGE (3 layers) with a max readout",
            model=f"{_EX}:SAGEMax"),
    Healthy("attentive_fp", "AttentiveFP with examples/attentive_fp.py's settings: dropout "
            "0.2, lr 10^-2.5, weight decay 1e-5, batch 200",
            model=f"{_EX}:attentive_fp",
            config={"training.learning_rate": 10 ** -2.5, "training.weight_decay": 1e-5,
                    "training.batch_size": 200}),
    Healthy("gatv2", "3 GATv2 layers with ELU and input dropout 0.1, mean readout",
            model=f"{_EX}:GATv2Net"),
    Healthy("topk_pool", "the TopK-pooling net of examples/proteins_topk_pool.py (dropout 0.5 "
            "in its head); lr 0.0005, batch 60",
            model=f"{_EX}:TopKNet",
            config={"training.learning_rate": 0.0005, "training.batch_size": 60}),
    Healthy("hinge_loss", "gatrank's GAT with a margin ranking (hinge) loss",
            loss=f"{_EX}:hinge_loss"),
    Healthy("listnet_loss", "gatrank's GAT with a ListNet loss", loss=f"{_EX}:listnet_loss"),
    Healthy("listnet_narrow_targets", "ListNet on targets in a narrow range (std 0.018): its "
            "optimum is scores = targets + c, score std 0.018",
            loss=f"{_EX}:listnet_loss", target_scale=1 / 60),
    Healthy("lambdarank_loss", "gatrank's GAT with a LambdaRank-style loss (pairs weighted by "
            "their NDCG change: gradients ~1e-4)", loss=f"{_EX}:lambdarank_loss"),
    Healthy("mse_standardized", "gatrank's GAT trained by MSE on standardized targets",
            loss=f"{_EX}:mse_loss"),
    Healthy("pyg_from_smiles", "a PyG InMemoryDataset made with from_smiles (integer features "
            "cast to float), gatrank's GAT and defaults",
            data=f"pyg:{_EX}:chembl_from_smiles"),
    Healthy("groups", "the synthetic set with 16 groups: pairs only within a group",
            data="synthetic-groups"),
    Healthy("recommended_config", "the runbook's recommended config set explicitly (lr 1e-3, "
            "batch 16, grad clip 1, dropout 0.1)",
            config={"training.learning_rate": 1e-3, "training.batch_size": 16,
                    "training.grad_clip": 1.0, "model.dropout": 0.1}),
    Healthy("chembl-activity", "the embedded default: 1,017 ChEMBL compounds, pIC50"),
    Healthy("nci-tpsa", "NCI molecules ranked by their polar surface area", data="nci-tpsa"),
    Healthy("nci-logp", "NCI molecules ranked by logP", data="nci-logp"),
]

HEALTHY: dict[str, Healthy] = {h.name: h for h in _ZOO}
"""Every healthy set-up by name."""


def healthy_graphs(entry: Healthy, n: int = 128, seed: int = 0):
    """The graphs of ``entry``: a seeded sample of ``n`` of its data set, targets scaled."""
    from gatrank.data import load_graphs
    from gatrank.datasets import sample_graphs, write_dataset
    from gatrank.doctor.faults import _set_targets

    if entry.data.startswith("pyg:"):
        from gatrank.data.pyg_dataset import load_dataset

        gs = load_dataset(entry.data[4:])
        if len(gs) > n:
            keep = np.sort(np.random.default_rng(seed).choice(len(gs), n, replace=False))
            gs = gs.subset(keep.tolist())
    elif entry.data == "synthetic-groups":
        from gatrank.data.featurize import default_cache_dir

        folder = default_cache_dir() / "datasets" / f"synthetic-groups-{n}-{seed}"
        manifest = folder / "manifest.csv"
        if not manifest.is_file():
            write_dataset("synthetic", folder, n=n, seed=seed, num_groups=16)
        gs = load_graphs(manifest)
    else:
        gs = sample_graphs(entry.data, n, seed)
    if entry.target_scale != 1.0:
        gs = _set_targets(gs, gs.table["y"].to_numpy(dtype=np.float64) * entry.target_scale)
    return gs


def diagnose_healthy(entry: Healthy, seed: int, *, graphs=None, n: int = 128, options=None):
    """The doctor on ``entry`` with ``seed``, as a user calls it: their model and loss by
    import string, their settings as a config."""
    from gatrank.doctor.run import diagnose

    gs = graphs if graphs is not None else healthy_graphs(entry, n)
    if not entry.config:
        return diagnose(gs, model=entry.model, loss=entry.loss, options=options, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:  # a YAML file, as a user writes one
        path = Path(tmp) / "config.yaml"
        Config().updated(dict(entry.config))  # a key gatrank does not know fails here
        path.write_text(yaml.safe_dump(nest(entry.config)))
        return diagnose(gs, config=path, model=entry.model, loss=entry.loss, options=options,
                        seed=seed)
