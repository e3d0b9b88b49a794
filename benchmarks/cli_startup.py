"""CLI start-up: wall time of `tinycats --help` and of every sub-command's `--help`.

Goal: each under 0.5 s on this 2-core machine, which needs lazy imports (no torch, no
modal before a command runs). Each is run `--repeats` times; the median is printed,
next to the bare interpreter start-up for scale.

    python benchmarks/cli_startup.py [--repeats 5] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from typer.main import get_command

from tinycats.cli import app

GOAL_SECONDS = 0.5


def command_paths() -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = [()]

    def walk(command, path: tuple[str, ...]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            paths.append((*path, name))
            walk(sub, (*path, name))

    walk(get_command(app), ())
    return paths


def median_seconds(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="top-level help only, 1 repeat")
    args = parser.parse_args()
    repeats = 1 if args.smoke else args.repeats
    paths = [()] if args.smoke else command_paths()
    python = median_seconds([sys.executable, "-c", "pass"], repeats)
    print(f"bare python start-up: {python * 1000:.0f} ms (median of {repeats})")
    worst = 0.0
    for path in paths:
        seconds = median_seconds([sys.executable, "-m", "tinycats", *path, "--help"], repeats)
        worst = max(worst, seconds)
        print(f"  tinycats {' '.join(path) + ' ' if path else ''}--help  {seconds * 1000:6.0f} ms")
    verdict = "PASS" if worst < GOAL_SECONDS else "MISS"
    print(f"slowest: {worst * 1000:.0f} ms (goal < {GOAL_SECONDS * 1000:.0f} ms): {verdict}")


if __name__ == "__main__":
    main()
