"""Wall time of ``caex demo``: the default profile (budget 15 min) and ``--fast`` (budget 3 min).

Runs each profile from scratch into a temporary folder and prints the time of
every stage, the total against the profile's budget, the CPU load average
during the run and the headline figures. On a shared machine wall times are
inflated; the process CPU time (with ``--threads 1``) estimates what the run
costs a single idle core. Writes ``benchmarks/bench_demo.json``. Run::

    python benchmarks/bench_demo.py [--profiles fast default] [--threads N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from caex.demo import get_profile, run_demo
from caex.utils import read_json, software_versions, write_json
from records import add_replace_argument, figures_file

HERE = Path(__file__).resolve().parent


def bench_profile(name: str, out: Path) -> dict:
    """Run one profile from scratch into ``out``; return its timings and figures."""
    profile = get_profile(name)
    load_before = os.getloadavg()[0]
    result = run_demo(out, profile=profile, force=True, verbose=True)
    stages = {outcome.name: round(outcome.seconds, 1) for outcome in result.outcomes}
    cpu = {outcome.name: round(outcome.cpu_seconds, 1) for outcome in result.outcomes}
    return {
        "profile": name,
        "budget_s": profile.budget_seconds,
        "total_s": round(result.seconds, 1),
        "within_budget": result.seconds <= profile.budget_seconds,
        "stages_s": stages,
        "cpu_s": round(sum(cpu.values()), 1),
        "stages_cpu_s": cpu,
        "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "classifier_accuracy": result.summary("classifier").get("test_accuracy"),
        "swap_success": result.summary("manifold").get("swap_success"),
        "aopc_ranking": result.summary("evaluate").get("aopc_ranking"),
        "summary": result.summary_lines(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["fast", "default"], choices=["tiny", "fast", "default"])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own; 1 is fastest on an oversubscribed box)")
    parser.add_argument("--keep", type=Path, default=None, help="write the runs under this folder and keep them")
    parser.add_argument("--json", type=Path, default=HERE / "bench_demo.json",
                        help="figures file; the profiles not run keep their rows from it (default: bench_demo.json "
                             "next to this script)")
    add_replace_argument(parser)
    args = parser.parse_args()
    json_path = figures_file(parser, args.json, args.replace)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    figures = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "versions": software_versions(), "runs": []}
    previous = read_json(json_path) if json_path.is_file() else {}
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        for name in args.profiles:
            run = bench_profile(name, root / name)
            figures["runs"].append(run)
            print(f"\n{name}: {run['total_s']:.0f} s (budget {run['budget_s']} s, "
                  f"{'within' if run['within_budget'] else 'OVER'} budget), load average "
                  f"{run['load_average_1min'][0]} -> {run['load_average_1min'][1]} on {os.cpu_count()} CPUs")
            print("  stages (wall): " + ", ".join(f"{stage} {s:.0f} s" for stage, s in run["stages_s"].items()))
            print(f"  process CPU time {run['cpu_s']:.0f} s (an idle-machine estimate with "
                  f"{torch.get_num_threads()} thread(s)): "
                  + ", ".join(f"{stage} {s:.0f} s" for stage, s in run["stages_cpu_s"].items()))
            print("\n".join(run["summary"]))
    kept = [run for run in previous.get("runs", []) if run["profile"] not in args.profiles]
    figures["runs"] = kept + figures["runs"]
    write_json(json_path, figures)


if __name__ == "__main__":
    main()
