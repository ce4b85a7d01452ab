"""Paired AOPC differences between methods, from a ``bench_evaluate`` JSON (or a ``results.json``).

Every method explains the same images with the same fill, so their per-image AOPCs pair up. The
difference of two methods' means, with the standard error of the paired differences, says whether one is
ahead on these images; the images' own spread (most of each method's standard error) is shared and drops out.

    python benchmarks/paired_aopc.py benchmarks/bench_evaluate_2026-12-07.json [--against fullgrad]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from caex.report.readings import paired_standard_error
from caex.utils import read_json


def paired_table(methods: list[dict], against: str) -> list[str]:
    """Markdown rows: each method's mean AOPC minus ``against``'s, ± the paired standard error."""
    rows = {row["method"]: row["aopc_per_image"] for row in methods if row.get("aopc_per_image")}
    if against not in rows:
        return [f"(no per-image AOPC for {against})"]
    lines = [f"| method | AOPC − {against} | paired s.e. | difference / s.e. |", "|---|---:|---:|---:|"]
    for name, values in rows.items():
        if name == against:
            continue
        difference = sum(a - b for a, b in zip(values, rows[against])) / len(values)
        error = paired_standard_error(values, rows[against])
        lines.append(f"| {name} | {difference:+.3f} | {error:.3f} | {difference / error:+.1f} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path)
    parser.add_argument("--against", default="fullgrad", help="the method every other one is compared with")
    args = parser.parse_args()
    content = read_json(args.json)
    sets = {"results": content} if "methods" in content else {k: v for k, v in content.items() if k != "versions"}
    for name, results in sets.items():
        print(f"\n### {name}\n")
        print("\n".join(paired_table(results["methods"], args.against)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
