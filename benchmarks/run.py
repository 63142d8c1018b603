"""Run benchmarks: ``python -m benchmarks.run [name ...] [options]`` (all of them by default).

Each benchmark prints a table and writes ``benchmarks/out/<name>.json`` and ``<name>.png``.
State (stores, synthetic data, logs) goes to ``benchmarks/out/tmp/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
import traceback

from benchmarks.common import write_result

# Name -> module; the order is the order of a full run (the slowest last).
BENCHMARKS: dict[str, str] = {
    "predict": "benchmarks.predict",
    "sensor": "benchmarks.sensor",
    "triggers": "benchmarks.triggers",
    "serve": "benchmarks.serve",
    "overhead": "benchmarks.overhead",
    "optuna": "benchmarks.tuning",
    "chain": "benchmarks.chain",
    "online_store": "benchmarks.online_store",
    "scaling": "benchmarks.scaling",
    "workers": "benchmarks.workers",
    "team": "benchmarks.team",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)}"
    )
    modules = {name: importlib.import_module(path) for name, path in BENCHMARKS.items()}
    for module in modules.values():
        module.add_arguments(parser)
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {list(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    command = shlex.join(["python", "-m", "benchmarks.run", *argv])
    failed = []
    for name in names:
        started = time.perf_counter()
        print(f"### {name}", flush=True)
        try:
            result = modules[name].run(args)
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            continue
        path = write_result(result, command)
        verdicts = [t.passed for t in result.targets]
        print(
            f"### {name}: {sum(v is True for v in verdicts)}/{len(verdicts)} targets met, "
            f"{time.perf_counter() - started:.0f} s -> {path}",
            flush=True,
        )
    if failed:
        print(f"error: benchmark(s) failed to run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
