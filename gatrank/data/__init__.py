"""Manifest and PyG dataset reading, graph loading, validation, splits and the SMILES cache.

A manifest is a CSV file with one row per graph: ``y`` (float target, larger should rank
higher), exactly one graph source per row (``path`` to a graph file relative to the manifest's
folder, or ``smiles``), and optional ``id``, ``split`` (train/val/test) and ``group`` (query id:
pairs form only within a group). Validation collects every problem of a manifest before it
reports, so a user fixes their data in one pass instead of one error at a time. A user's PyG
dataset (``package.module:name`` or a ``.pt`` file, see :mod:`gatrank.data.pyg_dataset`) gets
the same checks and becomes the same :class:`GraphSet`.

Every graph in a :class:`GraphSet` satisfies: ``x`` float32 ``[num_nodes, F]`` (F shared by all
graphs), ``edge_index`` int64 ``[2, E]`` with ``E > 0`` and indices in range, optional
``edge_attr`` float32 ``[E, D]``, ``y`` float32 ``[1]``, ``group`` int64 ``[1]`` (group code, -1
without groups), ``idx`` int64 ``[1]`` (position in the GraphSet), string attributes ``gid``
and ``smiles``; nothing is NaN or Inf.

Modules, one concern each: ``problems`` (DataProblem, DataError), ``safe_load``
(safe_torch_load), ``featurize`` (SMILES features and their cache), ``graph_files`` (loaders by
extension and per-graph checks), ``manifest`` (the table), ``graphset`` (GraphSet,
load_graphs), ``parallel`` (many graph files loaded and checked on a process pool),
``pyg_dataset`` (load_dataset), ``check`` (check_manifest, check_dataset), ``splits``
(split_indices).
"""

from gatrank.data.check import TIE_EPS, CheckReport, check_dataset, check_manifest
from gatrank.data.featurize import FEATURIZER_VERSION, default_cache_dir, featurize_smiles
from gatrank.data.graphset import GraphSet, load_graphs
from gatrank.data.manifest import SPLITS, read_manifest
from gatrank.data.problems import WARNING_CODES, DataError, DataProblem, UnsafeFileError
from gatrank.data.pyg_dataset import is_dataset_file, load_dataset
from gatrank.data.safe_load import UnsafeTorchError, safe_torch_load
from gatrank.data.splits import split_indices

__all__ = [
    "DataProblem",
    "DataError",
    "UnsafeFileError",
    "UnsafeTorchError",
    "GraphSet",
    "CheckReport",
    "read_manifest",
    "load_graphs",
    "load_dataset",
    "is_dataset_file",
    "check_manifest",
    "check_dataset",
    "split_indices",
    "safe_torch_load",
    "featurize_smiles",
    "default_cache_dir",
    "SPLITS",
    "WARNING_CODES",
    "TIE_EPS",
    "FEATURIZER_VERSION",
]
