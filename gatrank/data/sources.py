"""Whatever a notebook holds as graphs, named as one of the sources gatrank reads.

:func:`graph_source` takes what a user has at hand and says what it is:

- a ``GraphSet`` (gatrank's own, already validated);
- graphs in memory: a ``list``/``tuple`` of ``torch_geometric.data.Data``, a PyG
  ``Dataset``/``InMemoryDataset`` instance (or any sequence of graphs), a PyG ``Batch`` (its
  graphs) or a ``DataLoader`` (its ``dataset``); checked graph by graph like a ``--dataset``
  (:mod:`gatrank.data.pyg_dataset`), problems named by the graph's index;
- a path: a manifest (``.csv``, or a folder holding ``manifest.csv``) or a ``.pt`` file;
- an import string ``package.module:name``;
- ``None``: the embedded default data.

Anything else is a ``TypeError`` that names its type and lists what is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import DataLoader as TorchDataLoader
from torch_geometric.data import Batch, Data

from gatrank.data.graphset import GraphSet
from gatrank.data.pyg_dataset import memory_label

__all__ = ["ACCEPTED", "GraphSource", "graph_source"]

ACCEPTED = ("a list or tuple of torch_geometric.data.Data, a PyG Dataset or InMemoryDataset, a "
            "DataLoader (its dataset), a PyG Batch, a gatrank GraphSet, a manifest path "
            "(manifest.csv or its folder), a .pt file of a list of Data, an import string "
            "'package.module:name', or None for the embedded default data")
"""What :func:`graph_source` accepts, in words (for error messages)."""


@dataclass(frozen=True)
class GraphSource:
    """One source of graphs: exactly one of its fields is set (none: the embedded default)."""

    graphset: GraphSet | None = None
    graphs: Sequence | None = None
    """Graphs in memory, to be checked as a dataset's are."""
    manifest: str = ""
    dataset: str = ""
    """A ``.pt`` path or an import string, as ``--dataset`` takes it."""

    @property
    def label(self) -> str:
        """Where the graphs come from, for messages."""
        if self.graphset is not None:
            return self.graphset.source
        if self.graphs is not None:
            return memory_label(self.graphs)
        return (f"manifest {self.manifest}" if self.manifest else
                f"dataset {self.dataset}" if self.dataset else "the embedded default data")


def _reject(data: Any, why: str = "") -> TypeError:
    name = type(data).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return TypeError(f"gatrank cannot read graphs from {article} {name}{why}. It reads "
                     f"{ACCEPTED}.")


def _path_source(path: str | Path) -> GraphSource:
    text = str(path)
    p = Path(text).expanduser()
    if p.is_dir():
        if (p / "manifest.csv").is_file():
            return GraphSource(manifest=str(p / "manifest.csv"))
        raise FileNotFoundError(f"{text} is a folder without a manifest.csv: pass the manifest "
                                "file, a .pt file of a list of Data, or an import string "
                                "'package.module:name'")
    if p.suffix.lower() in (".csv", ".tsv"):
        return GraphSource(manifest=text)
    if isinstance(path, Path) or p.suffix.lower() == ".pt" or ":" in text or p.exists():
        return GraphSource(dataset=text)
    raise FileNotFoundError(f"{text!r} names no file and is not an import string "
                            "'package.module:name': pass a manifest .csv, a .pt file of a "
                            "list of Data, or an import string")


def graph_source(data: Any) -> GraphSource:
    """What ``data`` is, as a :class:`GraphSource` (see the module docstring).

    Raises:
        TypeError: ``data`` is nothing gatrank reads graphs from (the message names its type
            and lists what is accepted), e.g. a single ``Data`` or a generator.
        FileNotFoundError: a path that names no file.
    """
    if data is None:
        return GraphSource()
    if isinstance(data, GraphSet):
        return GraphSource(graphset=data)
    if isinstance(data, (str, Path)):
        return _path_source(data)
    if isinstance(data, TorchDataLoader):
        return graph_source(data.dataset)
    if isinstance(data, Batch):
        return GraphSource(graphs=data.to_data_list())
    if isinstance(data, Data):
        raise _reject(data, " (one graph): pass a list of graphs, [data_0, data_1, ...], "
                            "since ranking needs pairs")
    if isinstance(data, (bytes, Mapping, Tensor, type)) or type(data).__name__ == "DataFrame":
        why = (": write the table as a manifest (columns id, smiles or path, y) with "
               "df.to_csv and pass its path" if type(data).__name__ == "DataFrame" else "")
        raise _reject(data, why)
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        iterable = hasattr(data, "__iter__") or hasattr(data, "__next__")
        why = " (it has no length): pass list(...) of it" if iterable else ""
        raise _reject(data, why)
    return GraphSource(graphs=data)
