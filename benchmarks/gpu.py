"""``python -m benchmarks.gpu [--epochs N] [--batch-sizes 16,128] [--json F]``: graphs per second
of ``gatrank.training`` on the CPU and on CUDA, same model, data, config and seed.

For machines that have a GPU; without one it measures the CPU and says CUDA is absent (exit 0).
Each run is full training on the embedded default (chembl-activity) with the runbook's config and
``--epochs`` epochs (no early stopping); graphs/s = training graphs x epochs / training wall time
(the summary's ``wall_time_s``, which includes validation every epoch and the logged metrics).
The first CUDA run is a warm-up (CUDA context, kernels), not reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from gatrank.config import Config
from gatrank.data import load_graphs, split_indices
from gatrank.datasets import default_manifest
from gatrank.training import train

__all__ = ["main", "measure"]


def measure(device: str, batch_size: int, epochs: int, gs, splits) -> dict:
    """One training run on ``device``; returns its throughput and final metrics."""
    cfg = Config().updated({"training.device": device, "training.batch_size": batch_size,
                            "training.epochs": epochs, "training.patience": 0,
                            "training.cpu_threads": 0 if device != "cpu" else 1})
    t0 = time.perf_counter()
    res = train(cfg, graphs=gs, splits=splits, progress=False)
    wall = time.perf_counter() - t0
    n_train = len(splits["train"])
    return {"device": res.summary["device"], "batch_size": batch_size, "epochs": epochs,
            "train_graphs": n_train, "wall_s": round(wall, 2),
            "graphs_per_s": round(n_train * epochs / wall, 1),
            "val_spearman": res.summary["best_val_spearman"],
            "test_spearman": res.summary.get("test", {}).get("spearman")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=5, help="epochs per run (default 5)")
    p.add_argument("--batch-sizes", default="16,128",
                   help="comma-separated batch sizes (default 16,128: the runbook's and a larger "
                        "one, where a GPU pays off)")
    p.add_argument("--json", default="", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    gs = load_graphs(default_manifest())
    splits = split_indices(gs, seed=0, val_fraction=0.1, test_fraction=0.1)
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}; CUDA: "
          f"{torch.cuda.get_device_name(0) if cuda else 'not available (CPU only)'}")
    if cuda:
        measure("cuda", sizes[0], 1, gs, splits)  # warm-up
    rows = []
    for bs in sizes:
        cpu = measure("cpu", bs, args.epochs, gs, splits)
        rows.append(cpu)
        line = f"batch {bs:4d}: cpu {cpu['graphs_per_s']:9.1f} graphs/s"
        if cuda:
            gpu = measure("cuda", bs, args.epochs, gs, splits)
            rows.append(gpu)
            line += (f"   cuda {gpu['graphs_per_s']:9.1f} graphs/s   cuda/cpu "
                     f"{gpu['graphs_per_s'] / cpu['graphs_per_s']:.2f}x   test spearman cpu "
                     f"{cpu['test_spearman']:.3f} cuda {gpu['test_spearman']:.3f}")
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cuda": cuda, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
