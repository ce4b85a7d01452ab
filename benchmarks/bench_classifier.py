"""Wall time and test accuracy of ``caex train-classifier`` with its defaults, per architecture.

Runs the real command (a fresh process: start-up, data generation, training,
bundle export all count) and reads the accuracy back from ``classifier.json``.
The machine's load average is printed alongside, since shared CPUs skew times.

    python benchmarks/bench_classifier.py                      # resnet18 and smallcnn on `synthetic`
    python benchmarks/bench_classifier.py --arch smallcnn --data mnist
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from caex.utils import software_versions
from records import add_replace_argument, figures_file


def bench(data: str, arch: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "caex.cli.main", "train-classifier", data, "--arch", arch, "--out", tmp,
                   *extra]
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - started
        info = json.loads((Path(tmp) / "classifier.json").read_text())
    return {"data": data, "arch": arch, "test_accuracy": info["test_accuracy"], "wall_s": round(wall, 1),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            "command": "caex " + " ".join(command[3:]).replace(tmp, "OUT")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--arch", action="append", choices=("resnet18", "resnet50", "smallcnn"),
                        help="architecture to time (repeatable; default: resnet18 and smallcnn)")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"), help="where to write results")
    add_replace_argument(parser)
    args, extra = parser.parse_known_args()  # anything else goes to `caex train-classifier`
    figures_file(parser, args.json, args.replace)
    results = [bench(args.data, arch, extra) for arch in args.arch or ["resnet18", "smallcnn"]]
    machine = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
               "versions": software_versions()}
    print(f"machine: {machine}")
    for row in results:
        print(f"{row['arch']:>9} on {row['data']}: test accuracy {row['test_accuracy']:.4f}, wall {row['wall_s']} s "
              f"(load {row['load_before']} -> {row['load_after']})   $ {row['command']}")
    args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
