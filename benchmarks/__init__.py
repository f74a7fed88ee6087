"""gatrank's benchmarks: each figure of docs/benchmarks.md, measured against the alternative.

Run ``python -m benchmarks`` (full, rewrites docs/benchmarks.md and docs/benchmarks.json) or
``python -m benchmarks --quick`` (the CI mode: smaller sizes, same targets, exit 1 on a miss).
Each module holds one section and exposes ``run(opts) -> Section``.
"""

__all__: list[str] = []
