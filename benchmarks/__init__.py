"""Chancy's benchmark suite: ``python -m benchmarks`` (see benchmarks/README.md).

Every figure is measured on one Postgres server in one run, next to a raw-SQL baseline
(and the peers that are installed), so the ratios printed compare like with like."""

from chancy import execution

# The benchmarks push the plain functions of benchmarks.tasks by import path: every process
# that imports this package (the suite, its worker subprocesses) allows them.
execution.allow_imports(["benchmarks.tasks"])
