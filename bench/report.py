"""Write ``bench/RESULTS.md`` from the JSON documents the benchmarks wrote in this run.

    .venv/bin/python bench/report.py bench/results/decode.json bench/results/privacy.json ... [--out bench/RESULTS.md]

The file opens with one table of every goal the benchmarks measure (figure, value, goal, met), from
each document's ``goals``: a list of ``{"figure", "value", "goal", "met"}`` records (or a mapping of
goal name to met). Then each benchmark's document becomes one section: its figures flattened to
``dotted.key | value`` rows (lists of records as small tables), headed by the machine it ran on.
``make bench`` runs it last, so the file always holds the figures of the latest run only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "-"
    return str(v).replace("|", "\\|")


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        out: list[tuple[str, Any]] = []
        for k in sorted(obj):
            out += _flatten(obj[k], f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(obj, list) and obj and all(not isinstance(x, (dict, list)) for x in obj):
        return [(prefix, ", ".join(_fmt(x) for x in obj))]
    return [(prefix, obj)]


def _section(name: str, doc: Any) -> list[str]:
    lines = [f"## {name}", ""]
    scalars, tables = [], []
    for key, value in _flatten(doc):
        if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            tables.append((key, value))
        else:
            scalars.append((key, value))
    if scalars:
        lines += ["| figure | value |", "|---|---|", *(f"| {k} | {_fmt(v)} |" for k, v in scalars), ""]
    for key, rows in tables:
        cols = sorted({c for r in rows for c in r if not isinstance(r[c], (dict, list))})
        lines += [f"`{key}`:", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
        lines.append("")
    return lines


def _goals(name: str, doc: Any) -> list[str]:
    goals = doc.get("goals") if isinstance(doc, dict) else None
    if isinstance(goals, dict):
        goals = [{"figure": k, "value": None, "goal": k, "met": bool(v)} for k, v in sorted(goals.items())]
    if not isinstance(goals, list):
        return []
    return [f"| {name} | {_fmt(g.get('figure'))} | {_fmt(g.get('value'))} | {_fmt(g.get('goal'))} | {'yes' if g.get('met') else '**no**'} |"
            for g in goals if isinstance(g, dict)]


def render(paths: list[Path]) -> str:
    head = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`bench/report.py`) from the run's JSON documents in `bench/results/`; "
        "each figure is from the latest run on this machine:",
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
    ]
    docs = [(p.stem, json.loads(p.read_text())) for p in paths]
    goals = [row for name, doc in docs for row in _goals(name, doc)]
    if goals:
        head += ["## Goals", "", "| bench | figure | value | goal | met |", "|---|---|---|---|---|", *goals, ""]
    body: list[str] = []
    for name, doc in docs:
        body += _section(name, doc)
    return "\n".join(head + body).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", type=Path, help="JSON documents written by the benchmarks")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = ap.parse_args(argv)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(render(args.results))
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
