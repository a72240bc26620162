"""Chancy's benchmark suite: ``python -m benchmarks`` (see benchmarks/README.md).

Every figure is measured on one Postgres server in one run, next to a raw-SQL baseline
(and the peers that are installed), so the ratios printed compare like with like."""
