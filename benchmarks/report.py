"""``python -m benchmarks.report RESULT.json``: a saved result as Markdown tables, for
benchmarks/README.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.harness import _fmt


def markdown(result: dict) -> str:
    lines = ["| figure | median | min | max | unit |", "|---|---:|---:|---:|---|"]
    for figure in result["figures"].values():
        lines.append(f"| {figure['label']} | {_fmt(figure['median'])} | {_fmt(figure['min'])} | "
                     f"{_fmt(figure['max'])} | {figure['unit']} |")
    lines += ["", "| ratio | value | target | verdict |", "|---|---:|---:|---|"]
    for row in result["ratios"]:
        verdict = "" if row["met"] is None else ("met" if row["met"] else "**missed**")
        lines.append(f"| {row['label']} | {row['value']:.2f} | {row['target']} | {verdict} |")
    for row in result["limits"]:
        lines.append(f"| {row['label']} | {_fmt(row['median'])} | <= {_fmt(row['maximum'])} | "
                     f"{'met' if row['met'] else '**missed**'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
