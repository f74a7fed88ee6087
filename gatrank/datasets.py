"""Embedded data sets that need no network, each written out as an ordinary manifest; and the
one place that turns a config's data source (a manifest, a PyG dataset, or neither: the
embedded default) into graphs.

The real sets come from files shipped inside RDKit's wheel; ``synthetic`` is generated with a
planted, known signal. Writing them as ``manifest.csv`` means the embedded default goes through
exactly the loading path a user's own data takes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data

from gatrank.config import ConfigError, DataConfig
from gatrank.data import (
    CheckReport,
    GraphSet,
    check_dataset,
    check_manifest,
    load_dataset,
    load_graphs,
)
from gatrank.data.featurize import default_cache_dir
from gatrank.data.sources import GraphSource

# RDKit is imported inside the functions that read its files, on purpose: it is a heavy import
# that listing the data sets or writing `synthetic` never needs.

logger = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "list_datasets",
    "write_dataset",
    "default_manifest",
    "dataset_manifest",
    "manifest_or_default",
    "sample_graphs",
    "with_source",
    "load_data",
    "check_data",
    "load_source",
    "check_source",
    "DEFAULT_DATASET",
]

DEFAULT_DATASET = "chembl-activity"
DATASETS: dict[str, str] = {
    "chembl-activity": "1,017 compounds of one ChEMBL series (CHEMBL2321810) ranked by measured "
                       "activity (pIC50); a real ranking task (the default)",
    "nci-tpsa": "about 5,000 NCI molecules with their topological polar surface area, a target "
                "the graph fully determines",
    "nci-logp": "200 NCI molecules (RDKit's first_200.props.sdf) with Daylight's computed logP "
                "(DAYLIGHT_CLOGP), -3.6 to 9.9; all 200 parse and have bonds, so 200 rows",
    "synthetic": "random graphs with a planted signal (type-0 node count + 0.5 x cycle rank) "
                 "plus noise, as .pt files; knobs make it collapse-prone",
}
# Rows written with default options (nci-tpsa: 4,999 rows minus 8 SMILES RDKit cannot parse;
# nci-logp: every one of the SDF's 200 records).
_SIZES = {"chembl-activity": 1017, "nci-tpsa": 4991, "nci-logp": 200, "synthetic": 512}
_SYNTHETIC_OPTIONS = {"noise": 0.05, "num_groups": 0, "constant_features": False}
_NUM_TYPES = 4  # one-hot node types of synthetic graphs; type 0 carries the signal


def list_datasets() -> list[dict[str, Any]]:
    """``[{"name", "description", "size"}]``; size = rows written with default options."""
    return [{"name": k, "description": v, "size": _SIZES[k]} for k, v in DATASETS.items()]


def _rdkit_file(*parts: str, contrib: bool) -> Path:
    from rdkit import RDConfig  # deferred (see the imports)

    path = Path(RDConfig.RDContribDir if contrib else RDConfig.RDDataDir, *parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the RDKit installation; install the "
                                "PyPI 'rdkit' wheel, which ships it")
    return path


def _chembl_activity() -> pd.DataFrame:
    """id, smiles, y (pIC50) for CHEMBL2321810, joined on the compound name."""
    smi = pd.read_csv(_rdkit_file("FreeWilson", "data", "CHEMBL2321810.smi", contrib=True),
                      sep=" ", header=None, names=["smiles", "id"], dtype=str)
    act = pd.read_csv(_rdkit_file("FreeWilson", "data", "CHEMBL2321810_act.csv", contrib=True),
                      dtype={"Name": str}).rename(columns={"Name": "id", "Act": "y"})
    return smi.merge(act, on="id", how="inner", validate="one_to_one")[["id", "smiles", "y"]]


def _nci_tpsa() -> pd.DataFrame:
    """id (the NCI row number from first_5K.smi), smiles, y (TPSA); unparsable SMILES dropped."""
    from rdkit import RDLogger  # deferred (see the imports)

    RDLogger.DisableLog("rdApp.*")
    # skip only the leading '#' comment line: '#' inside SMILES is a triple bond
    lines = _rdkit_file("NCI", "first_5k.tpsa.csv", contrib=False).read_text().splitlines()
    table = pd.DataFrame([ln.rsplit(",", 1) for ln in lines if ln and not ln.startswith("#")],
                         columns=["smiles", "y"]).astype({"y": float})
    names = pd.read_csv(_rdkit_file("NCI", "first_5K.smi", contrib=False), sep="\t",
                        header=None, names=["smiles", "id"], dtype=str)
    if not (names["smiles"].to_numpy() == table["smiles"].to_numpy()).all():
        raise ValueError("RDKit's NCI first_5K.smi and first_5k.tpsa.csv rows do not line up")
    table.insert(0, "id", names["id"])
    return _parsable_with_bonds(table, "nci-tpsa")


def _nci_logp() -> pd.DataFrame:
    """id (the NCI row number), smiles (the record's ``SMILES``), y (``DAYLIGHT_CLOGP``) from
    first_200.props.sdf; molecules RDKit cannot parse or without bonds dropped.

    The SDF's molecule names are empty: its records are rows 1-200 of first_5K.smi in order
    (the same molecules, canonically, as nci-tpsa's ids 1-200), so a record's position is its
    NCI row number. The SMILES come from the record's property, not from its 2D molblock,
    whose coordinates add double-bond stereo the other NCI files do not have.
    """
    from rdkit import Chem, RDLogger  # deferred (see the imports)

    RDLogger.DisableLog("rdApp.*")
    rows = []
    sdf = _rdkit_file("NCI", "first_200.props.sdf", contrib=False)
    for k, mol in enumerate(Chem.SDMolSupplier(str(sdf)), start=1):
        if mol is None or not mol.HasProp("DAYLIGHT_CLOGP"):
            continue
        smiles = mol.GetProp("SMILES") if mol.HasProp("SMILES") else Chem.MolToSmiles(mol)
        rows.append((str(k), smiles, float(mol.GetProp("DAYLIGHT_CLOGP"))))
    return _parsable_with_bonds(pd.DataFrame(rows, columns=["id", "smiles", "y"]), "nci-logp")


def _parsable_with_bonds(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows whose SMILES RDKit parses into a molecule with at least one bond."""
    from rdkit import Chem  # deferred (see the imports)

    ok = [(m := Chem.MolFromSmiles(s)) is not None and m.GetNumBonds() > 0
          for s in table["smiles"]]
    if not all(ok):
        logger.info("%s: leaving out %d molecules RDKit cannot parse or without bonds",
                    name, len(ok) - sum(ok))
    return table[ok].reset_index(drop=True)


def _write_manifest(table: pd.DataFrame, out_dir: Path) -> Path:
    """Write ``out_dir/manifest.csv`` atomically, so a reader never sees half a file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.csv"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".manifest", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            table.to_csv(f, index=False)
        os.replace(tmp, manifest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return manifest


def _random_graph(rng: np.random.Generator, num_nodes: int) -> tuple[torch.Tensor, int]:
    """A connected random graph: a random tree plus a few extra edges.

    Returns ``edge_index`` int64 ``[2, 2 * num_undirected_edges]`` (both directions) and the
    cycle rank (extra edges beyond the tree).
    """
    pairs = {(int(rng.integers(0, i)), i) for i in range(1, num_nodes)}
    tree = len(pairs)
    for _ in range(int(rng.integers(0, num_nodes // 3 + 1))):
        u, v = sorted(int(a) for a in rng.choice(num_nodes, size=2, replace=False))
        pairs.add((u, v))
    und = torch.tensor(sorted(pairs), dtype=torch.long).t()  # [2, E_undirected]
    return torch.cat([und, und.flip(0)], dim=1), len(pairs) - tree


def _synthetic(out_dir: Path, n: int, seed: int, noise: float, num_groups: int,
               constant_features: bool) -> pd.DataFrame:
    """Write ``n`` graphs to ``out_dir/graphs/*.pt``; return the manifest table.

    Node features: one-hot type (4) + 2 standard-normal distractors, or all ones when
    ``constant_features`` (the model then cannot tell nodes apart). Target:
    ``signal = (#type-0 nodes) + 0.5 * cycle_rank`` and ``y = signal + noise * std(signal) * eps``.
    """
    if n < 2:
        raise ValueError(f"synthetic needs n >= 2 graphs to form pairs, got n={n}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if num_groups < 0 or (num_groups and n < 2 * num_groups):
        raise ValueError(f"num_groups={num_groups} needs n >= 2 * num_groups (got n={n}) so "
                         "every group has at least two graphs; use num_groups=0 for no groups")
    rng = np.random.default_rng(seed)
    graph_dir = out_dir / "graphs"
    graph_dir.mkdir(parents=True, exist_ok=True)
    rows, signal = [], []
    for k in range(n):
        num_nodes = int(rng.integers(8, 31))
        types = rng.integers(0, _NUM_TYPES, num_nodes)
        cont = rng.standard_normal((num_nodes, 2))
        edge_index, cycle_rank = _random_graph(rng, num_nodes)
        if constant_features:
            x = torch.ones(num_nodes, _NUM_TYPES + 2)
        else:
            x = torch.cat([torch.nn.functional.one_hot(torch.from_numpy(types), _NUM_TYPES),
                           torch.from_numpy(cont)], dim=1).float()
        rel = f"graphs/g{k:05d}.pt"
        torch.save(Data(x=x, edge_index=edge_index), out_dir / rel)
        signal.append(float((types == 0).sum()) + 0.5 * cycle_rank)
        rows.append({"id": f"g{k:05d}", "path": rel})
    sig = np.asarray(signal)
    y = sig + noise * (sig.std() or 1.0) * rng.standard_normal(n)
    table = pd.DataFrame(rows)
    table["y"] = np.round(y, 6)
    table["signal"] = sig  # the planted signal, for checks; gatrank ignores unknown columns
    if num_groups:
        table["group"] = [f"q{g}" for g in rng.permutation(np.arange(n) % num_groups)]
    return table


_READERS = {"chembl-activity": _chembl_activity, "nci-tpsa": _nci_tpsa, "nci-logp": _nci_logp}
"""The real data sets' readers: id, smiles, y."""


def write_dataset(name: str, out_dir: str | Path, *, n: int | None = None, seed: int = 0,
                  **options: Any) -> Path:
    """Write data set ``name`` as ``out_dir/manifest.csv`` (+ graph files); return its path.

    Args:
        name: one of ``DATASETS``.
        out_dir: folder to write into (created).
        n: number of graphs. Real sets: a seeded random sample of ``n`` rows kept in source
            order (default: all). ``synthetic``: how many to generate (default 512).
        seed: seeds the sample or the generator; the same seed writes the same data.
        options: ``synthetic`` only: ``noise`` (0.05), ``num_groups`` (0 = no group column),
            ``constant_features`` (False).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    out_dir = Path(out_dir)
    allowed = _SYNTHETIC_OPTIONS if name == "synthetic" else {}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for data set {name!r}; allowed: "
                         f"{sorted(allowed) or 'none'}")
    if n is not None and n < 1:
        raise ValueError(f"n must be a positive number of graphs, got {n}")
    if name == "synthetic":
        table = _synthetic(out_dir, 512 if n is None else n, seed, **{**allowed, **options})
    else:
        table = _READERS[name]()
        if n is not None:
            if n > len(table):
                raise ValueError(f"{name} has {len(table)} molecules; n={n} is too many")
            keep = np.sort(np.random.default_rng(seed).choice(len(table), n, replace=False))
            table = table.iloc[keep].reset_index(drop=True)
    manifest = _write_manifest(table, out_dir)
    logger.info("wrote %s (%d rows) to %s", name, len(table), manifest)
    return manifest


def default_manifest(cache_dir: str | Path | None = None) -> Path:
    """The embedded default (chembl-activity) under ``<cache>/datasets/``, written once."""
    return dataset_manifest(DEFAULT_DATASET, cache_dir)


def dataset_manifest(name: str, cache_dir: str | Path | None = None) -> Path:
    """Data set ``name`` (default options) as ``<cache>/datasets/<name>/manifest.csv``,
    written on first use and read from there after (``cache_dir`` default: gatrank's cache,
    ``$GATRANK_CACHE_DIR`` or ``~/.cache/gatrank``)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    manifest = root / "datasets" / name / "manifest.csv"
    if manifest.is_file():
        return manifest
    return write_dataset(name, manifest.parent)


def sample_graphs(name: str = DEFAULT_DATASET, n: int = 128, seed: int = 0):
    """A seeded sample of ``n`` graphs of data set ``name`` (default options, written once to
    gatrank's cache by :func:`dataset_manifest`), in its order; all of it when it has no more
    than ``n``."""
    full = load_graphs(dataset_manifest(name))
    if n >= len(full):
        return full
    keep = np.sort(np.random.default_rng(seed).choice(len(full), n, replace=False))
    return full.subset(keep.tolist())


def manifest_or_default(*candidates: str | Path | None) -> Path:
    """The first non-empty of ``candidates`` (a ``--manifest`` flag, then the config's
    ``data.manifest``, ...), else the embedded default (see :func:`default_manifest`)."""
    for candidate in candidates:
        if candidate:
            return Path(candidate)
    return default_manifest()


def with_source(data: DataConfig, manifest: str | Path | None = None,
                dataset: str | None = None) -> DataConfig:
    """``data`` with its source replaced by ``manifest`` or ``dataset`` when one is given (a
    ``--manifest`` / ``--dataset`` flag overrides the config's source, whichever it was).

    Raises:
        ConfigError: both are given.
    """
    if manifest and dataset:
        raise ConfigError(f"give a manifest or a dataset, not both (manifest={str(manifest)!r}, "
                          f"dataset={dataset!r})")
    if manifest:
        return dataclasses.replace(data, manifest=str(manifest), dataset="")
    if dataset:
        return dataclasses.replace(data, manifest="", dataset=str(dataset))
    return data


def load_data(data: DataConfig) -> GraphSet:
    """The graphs ``data`` names: ``data.dataset`` (a PyG dataset), else ``data.manifest``, else
    the embedded default; validated, with ``data.on_error`` and ``data.allow_outside_root``.

    Raises:
        DataError: every problem of the data (see :func:`gatrank.data.load_graphs`).
    """
    if data.dataset:
        return load_dataset(data.dataset, on_error=data.on_error)
    return load_graphs(manifest_or_default(data.manifest), on_error=data.on_error,
                       allow_outside_root=data.allow_outside_root)


def check_data(data: DataConfig) -> CheckReport:
    """Every problem of the data ``data`` names (as :func:`load_data` picks it) and a summary;
    never raises for data problems."""
    if data.dataset:
        return check_dataset(data.dataset)
    return check_manifest(manifest_or_default(data.manifest),
                          allow_outside_root=data.allow_outside_root)


def load_source(src: GraphSource, data: DataConfig, on_error: str | None = None) -> GraphSet:
    """The graphs of ``src`` (:func:`gatrank.data.sources.graph_source`), validated: a
    GraphSet as it is, graphs in memory as a dataset's, a path or import string as ``data``
    with that source would load it; none: ``data``'s own source. ``on_error`` (default
    ``data.on_error``) as in :func:`load_data`.

    Raises:
        DataError: every problem of the graphs, by index (or manifest line).
    """
    on_error = on_error or data.on_error
    if src.graphset is not None:
        return src.graphset
    if src.graphs is not None:
        return load_dataset(src.graphs, on_error=on_error)
    return load_data(dataclasses.replace(
        with_source(data, src.manifest or None, src.dataset or None), on_error=on_error))


def check_source(src: GraphSource, data: DataConfig) -> CheckReport:
    """Every problem of the graphs of ``src`` (as :func:`load_source` reads them) and a
    summary; never raises for data problems."""
    if src.graphset is not None or src.graphs is not None:
        return check_dataset(src.graphset.graphs if src.graphset is not None else src.graphs)
    return check_data(with_source(data, src.manifest or None, src.dataset or None))

