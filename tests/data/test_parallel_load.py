"""gatrank.data.parallel: graph files loaded on a process pool give the graphs, the order and the
problems that loading them in one process gives, wherever load_graphs is called from.

The pool is forced onto a small manifest: the file threshold and the chunk size are lowered
(module constants) and num_workers=2 is passed, so every test here really forks workers.
"""

from __future__ import annotations

import fractions
import json
import logging
import math
import multiprocessing
import os
import threading
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch
from tiny_graphs import EI4, X4, save_pt, write_manifest

import gatrank.data.parallel as gd_parallel
from gatrank.cli import main
from gatrank.data import (
    DataError,
    GraphSet,
    UnsafeTorchError,
    check_manifest,
    load_graphs,
    safe_torch_load,
)
from gatrank.data.graphset import _collect

POOL_LOG = "graph files on 2 worker processes"


@pytest.fixture
def pooled(monkeypatch):
    """Pool from 2 files on, 3 files a chunk: a 60-row manifest makes ~15 chunks."""
    monkeypatch.setattr(gd_parallel, "_POOL_MIN_FILES", 2)
    monkeypatch.setattr(gd_parallel, "_MAX_CHUNK", 3)


def _good_and_bad_files(folder) -> list[str]:
    """Good graphs in every format and every kind of broken file; returns their paths."""
    (folder / "sub").mkdir()
    good = [save_pt(folder / "a.pt"), save_pt(folder / "b.pt", x=X4 + 1)]
    torch.save({"x": X4.double() * 2, "edge_index": EI4.int()}, folder / "dict.pt")
    save_pt(folder / "sub" / "ea.pt", edge_attr=torch.arange(16.0).view(8, 2))
    save_pt(folder / "ea1d.pt", edge_attr=torch.arange(8.0))  # 1-D edge_attr becomes [8, 1]
    save_pt(folder / "strided.pt", x=torch.arange(12.0).view(3, 4).t())  # non-contiguous x
    np.savez(folder / "g.npz", x=X4.numpy() - 3, edge_index=EI4.numpy())
    (folder / "arrays.json").write_text(json.dumps({"x": (X4 / 7).tolist(),
                                                    "edge_index": EI4.tolist()}))
    g = nx.Graph()
    for i in range(4):
        g.add_node(f"n{i}", a=float(i), b=float(i * i), c=1.5)
    g.add_edges_from([("n0", "n1"), ("n1", "n2"), ("n2", "n3")])
    (folder / "links.json").write_text(json.dumps(nx.node_link_data(g, edges="links")))
    nx.write_graphml(g, folder / "g.graphml")
    nx.write_gml(g, folder / "g.gml")
    good += ["dict.pt", "sub/ea.pt", "ea1d.pt", "strided.pt", "g.npz", "arrays.json",
             "links.json", "g.graphml", "g.gml"]
    data = (folder / "a.pt").read_bytes()
    (folder / "trunc.pt").write_bytes(data[: len(data) // 2])
    (folder / "corrupt.json").write_text('{"x": [[1, 2], ')
    (folder / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (folder / "bad.graphml").write_text("<graphml><graph>")
    (folder / "bad.gml").write_text("graph [ node [ id 0 ")
    torch.save([1, 2, 3], folder / "list.pt")
    torch.save({"x": fractions.Fraction(1, 2), "edge_index": EI4}, folder / "unsafe.pt")
    np.savez(folder / "no_x.npz", edge_index=EI4.numpy())
    save_pt(folder / "no_edges.pt", edge_index=torch.zeros(2, 0, dtype=torch.long))
    save_pt(folder / "out_of_range.pt", edge_index=torch.tensor([[0, 1], [1, 12]]))
    np.savez(folder / "float_edges.npz", x=X4.numpy(), edge_index=np.array([[0, 0.5], [1, 2]]))
    save_pt(folder / "wide.pt", x=torch.ones(4, 5))
    x_nan = X4.clone()
    x_nan[2, 1] = math.nan
    save_pt(folder / "nan_x.pt", x=x_nan)
    save_pt(folder / "inf_edge.pt", edge_attr=torch.tensor([[1.0]] * 7 + [[math.inf]]))
    bad = ["trunc.pt", "corrupt.json", "garbage.npz", "bad.graphml", "bad.gml", "list.pt",
           "unsafe.pt", "no_x.npz", "no_edges.pt", "out_of_range.pt", "float_edges.npz",
           "wide.pt", "nan_x.pt", "inf_edge.pt", "nope.pt", "sub/nope.json"]
    return good + bad


@pytest.fixture
def mixed(tmp_path):
    """A manifest of ~60 rows: every good and broken file three times, interleaved with rows the
    manifest check rejects before any file is read (NaN target, duplicate id)."""
    paths = _good_and_bad_files(tmp_path)
    rows = ["id,y,path,group"]
    for rep in range(3):
        for k, rel in enumerate(paths):
            rows.append(f"r{rep}_{k},{rep * 100 + k},{rel},q{k % 4}")
        rows += [f"nan{rep},nan,a.pt,q0", f"r{rep}_0,1,b.pt,q1"]
    return write_manifest(tmp_path, "\n".join(rows) + "\n")


def _loaded(manifest, num_workers, caplog) -> tuple[GraphSet, bool]:
    """load_graphs(on_error="skip"), and whether it went through the pool."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gatrank.data"):
        gs = load_graphs(manifest, on_error="skip", num_workers=num_workers)
    return gs, POOL_LOG in caplog.text


def assert_same_graphsets(a: GraphSet, b: GraphSet) -> None:
    """Same graphs (every attribute, values and dtypes), order, table and dropped problems."""
    assert a.table.equals(b.table) and a.dropped == b.dropped
    assert (a.num_features, a.edge_dim, len(a)) == (b.num_features, b.edge_dim, len(b))
    for g, h in zip(a.graphs, b.graphs, strict=True):
        assert sorted(g.keys()) == sorted(h.keys())
        for key in g.keys():
            u, v = g[key], h[key]
            if isinstance(u, torch.Tensor):
                assert u.dtype == v.dtype and torch.equal(u, v), key
            else:
                assert u == v, key


def test_pool_gives_the_graphs_order_and_problems_of_one_process(mixed, pooled, caplog):
    serial, used = _loaded(mixed, 1, caplog)
    assert not used
    pooled_gs, used = _loaded(mixed, 2, caplog)
    assert used  # the comparison below is between two different code paths
    assert_same_graphsets(serial, pooled_gs)
    # the oracle: every good file in manifest order but the two whose edge features only they
    # have (the width check); every broken one dropped with its code
    assert len(serial) == 3 * 9
    assert serial.table["id"].tolist()[:3] == ["r0_0", "r0_1", "r0_2"]
    codes = {p.code for p in serial.dropped}
    assert codes == {"missing_file", "unreadable_file", "bad_graph_content", "unsafe_file",
                     "missing_features", "no_edges", "edge_index_out_of_range",
                     "non_integer_edge_index", "feature_width_mismatch", "nonfinite_features",
                     "nonfinite_edge_features", "edge_feature_width_mismatch", "nan_target",
                     "duplicate_id"}
    by_file = {p.file: p for p in pooled_gs.dropped if p.code == "missing_file"}
    assert "sub/nope.json" in by_file and str(mixed.parent / "sub" / "nope.json") in \
        by_file["sub/nope.json"].problem


def test_pool_reports_the_same_problem_list_and_error_table(mixed, pooled):
    reports = [check_manifest(mixed, num_workers=n) for n in (1, 2)]
    assert reports[0].problems == reports[1].problems  # codes, lines, ids, files, messages
    assert reports[0].summary == reports[1].summary
    # per round: 16 broken files, 2 rows with the minority's edge features, 2 manifest rows
    assert len(reports[0].problems) == 3 * 20
    lines = [p.line for p in reports[0].problems]
    assert lines == sorted(lines)
    errors = []
    for n in (1, 2):
        with pytest.raises(DataError) as err:
            load_graphs(mixed, num_workers=n)
        errors.append(err.value)
    assert errors[0].problems == errors[1].problems and str(errors[0]) == str(errors[1])


def test_pool_tensors_equal_one_process_before_the_width_check(mixed, pooled):
    """Every graph a file gives, including those the width check then rejects (edge_attr)."""
    cols = [_collect(mixed, False, None, n) for n in (1, 2)]
    assert cols[0].tensors.keys() == cols[1].tensors.keys() and cols[0].keep == cols[1].keep
    with_edge_attr = 0
    for i, (x, ei, ea) in cols[0].tensors.items():
        px, pei, pea = cols[1].tensors[i]
        assert x.dtype == px.dtype == torch.float32 and torch.equal(x, px)
        assert ei.dtype == pei.dtype == torch.int64 and torch.equal(ei, pei)
        assert (ea is None) == (pea is None)
        if ea is not None:
            with_edge_attr += 1
            assert ea.dtype == pea.dtype and torch.equal(ea, pea)
    assert with_edge_attr == 3 * 2  # sub/ea.pt [8, 2] and ea1d.pt [8, 1]


def test_an_old_torch_is_reported_once_through_the_pool(mixed, pooled, monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")  # forked workers see it too
    messages = []
    for n in (1, 2):
        with pytest.raises(UnsafeTorchError) as err:
            load_graphs(mixed, on_error="skip", num_workers=n)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith(f"{mixed.parent / 'a.pt'} was NOT loaded: torch 2.5.1+cpu")


def test_check_data_command_goes_through_the_pool(mixed, pooled, monkeypatch, capsys, caplog):
    outputs = []
    for cores in (1, 2):  # the command's default: every core this process may use
        monkeypatch.setattr(gd_parallel, "_cores", lambda cores=cores: cores)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="gatrank.data"):
            assert main(["check-data", "--manifest", str(mixed)]) == 1
        assert (POOL_LOG in caplog.text) == (cores == 2)
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and "unsafe_file" in outputs[0]


def _in_thread(fn, timeout: float = 120) -> dict:
    """``fn()`` in a thread: ``{"value": ...}`` or ``{"exc": ...}``; ``{}`` if it hung."""
    out: dict = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            out["exc"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    return out


def test_pool_from_a_thread(mixed, pooled, caplog):
    serial, _ = _loaded(mixed, 1, caplog)
    busy = threading.Event()  # another thread keeps running torch while the pool forks

    def spin() -> None:
        while not busy.is_set():
            torch.ones(64).sum()

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        with caplog.at_level(logging.INFO, logger="gatrank.data"):
            out = _in_thread(lambda: load_graphs(mixed, on_error="skip", num_workers=2))
    finally:
        busy.set()
        spinner.join()
    assert out, "load_graphs hung in a thread"
    assert "exc" not in out, out.get("exc")
    assert POOL_LOG in caplog.text
    assert_same_graphsets(serial, out["value"])


def _codes_in_child(manifest: str, conn) -> None:
    gs = load_graphs(manifest, on_error="skip", num_workers=2)
    conn.send((len(gs), [p.code for p in gs.dropped]))


def test_a_daemonic_process_loads_without_a_pool(mixed, pooled, caplog):
    """A multiprocessing pool's worker (daemonic) may not start children: it loads itself."""
    serial, _ = _loaded(mixed, 1, caplog)
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_codes_in_child, args=(str(mixed), theirs), daemon=True)
    child.start()
    child.join(120)
    assert child.exitcode == 0 and ours.poll(), "the daemonic child failed"
    assert ours.recv() == (len(serial), [p.code for p in serial.dropped])


_KERNEL_CODE = """
import json, logging
import gatrank.data.parallel as gd_parallel
from gatrank.data import check_manifest
gd_parallel._POOL_MIN_FILES, gd_parallel._MAX_CHUNK = 2, 3
seen = []
handler = logging.Handler()
handler.emit = lambda record: seen.append(record.getMessage())
logging.getLogger("gatrank.data.parallel").addHandler(handler)
logging.getLogger("gatrank.data.parallel").setLevel(logging.INFO)
one, pool = (check_manifest(MANIFEST, num_workers=n) for n in (1, 2))
print(json.dumps({"same": one.problems == pool.problems and one.summary == pool.summary,
                  "problems": len(one.problems), "graphs": one.summary["num_graphs"],
                  "pool": any("on 2 worker processes" in m for m in seen)}))
"""


@pytest.mark.slow
def test_pool_from_a_notebook_kernel(mixed):
    """A Jupyter kernel (this interpreter's ipykernel, as the suite starts it) forks the pool
    from its execution thread while its other threads (heartbeat, iopub, control) run."""
    import gatrank
    from gatrank.suite.kernel import kernel_manager_class

    km = kernel_manager_class()()
    src = str(Path(gatrank.__file__).resolve().parents[1])  # this gatrank, not another one
    km.start_kernel(env={**os.environ, "PYTHONPATH": os.pathsep.join(
        [src, os.environ.get("PYTHONPATH", "")])})
    kc = km.client()
    out: list[str] = []
    try:
        kc.start_channels()
        kc.wait_for_ready(timeout=120)

        def hook(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        reply = kc.execute_interactive(f"MANIFEST = {str(mixed)!r}\n" + _KERNEL_CODE,
                                       timeout=300, output_hook=hook)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok", "".join(out)
    assert json.loads("".join(out)) == {"same": True, "problems": 60, "graphs": 27,
                                        "pool": True}


def test_a_worker_that_dies_is_an_error_not_a_hang(mixed, pooled, monkeypatch):
    real = gd_parallel._load_chunk

    def dying(task):
        if any(rel == "g.gml" for _, rel in task[1]):
            os._exit(9)  # as the kernel's OOM killer would end it
        return real(task)

    # pickled by name: the forked workers find this function under the real one's name
    dying.__module__, dying.__qualname__ = real.__module__, real.__qualname__
    monkeypatch.setattr(gd_parallel, "_load_chunk", dying)
    out = _in_thread(lambda: load_graphs(mixed, on_error="skip", num_workers=2))
    assert out, "load_graphs hung after a worker died"
    assert isinstance(out.get("exc"), RuntimeError), out
    assert "worker process loading graph files ended abruptly" in str(out["exc"])
    assert "num_workers=1" in str(out["exc"])


@pytest.mark.parametrize("workers", [-1, -4])
def test_negative_num_workers_is_an_error(mixed, workers):
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        load_graphs(mixed, num_workers=workers)


def test_few_files_load_in_this_process(mixed, caplog):
    """Under the threshold (the real one) no pool starts, even with workers to spare."""
    _, used = _loaded(mixed, 2, caplog)
    assert not used and gd_parallel._POOL_MIN_FILES > 60


def test_unpack_rebuilds_views_of_one_buffer_per_chunk(tmp_path):
    """What a worker sends is numpy (no tensor, so no shared-memory file per tensor); the
    parent's tensors are views of one buffer per kind."""
    save_pt(tmp_path / "a.pt", edge_attr=torch.ones(8, 2))
    save_pt(tmp_path / "b.pt", x=torch.ones(5, 3), edge_index=torch.tensor([[0, 4], [4, 0]]))
    packed = gd_parallel._load_chunk((str(tmp_path), [(0, "a.pt"), (7, "nope.pt"),
                                                      (9, "b.pt")]))
    assert all(isinstance(a, np.ndarray) for a in packed[:4])
    assert packed[0].tolist() == [[0, 4, 3, 8, 2], [9, 5, 3, 2, -1]]
    assert [p[:3] for p in packed[4]] == [(7, "nope.pt", "missing_file")]
    graphs = dict(gd_parallel._unpack(packed))
    a, b = safe_torch_load(tmp_path / "a.pt"), safe_torch_load(tmp_path / "b.pt")
    assert torch.equal(graphs[0][0], a.x) and torch.equal(graphs[0][1], a.edge_index)
    assert torch.equal(graphs[0][2], a.edge_attr) and graphs[9][2] is None
    assert torch.equal(graphs[9][0], b.x) and torch.equal(graphs[9][1], b.edge_index)
    assert graphs[0][0].untyped_storage().data_ptr() == graphs[9][0].untyped_storage().data_ptr()
