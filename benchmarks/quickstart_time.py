"""The quickstart's time: `tinycats quickstart` end to end, wall clock and CPU time.

Goal (issue 24): under 5 minutes of wall clock on an idle 2-core CPU. A shared host's
load stretches the wall clock, so the command's CPU time (user + system, every thread)
and the load average are printed beside it; on an idle machine with two threads the
wall clock is about half the CPU time.

    python benchmarks/quickstart_time.py [--out DIR] [--smoke]

--smoke runs the same six stages in-process with tiny recipes on synthetic images
(seconds), so the script cannot rot.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_SECONDS = 300.0
SMOKE = [
    "data.image_size=16",
    "data.synthetic_classes=4",
    "data.synthetic_per_class=8",
    "optim.batch_size=8",
    "optim.max_steps=4",
    "checkpoint.every_steps=2",
]


def run_smoke(out: Path) -> None:
    """The quickstart in this process with tiny recipes and no photos."""
    from typer.testing import CliRunner

    from tinycats.cli import app
    from tinycats.cli import quickstart as qs

    qs.RECIPES.update(classifier=SMOKE, dit=[*SMOKE, "dit.width=32", "dit.depth=1", "dit.heads=2"])
    qs.SHARED_PHOTOS = out / "no-photos"
    qs.GRID_PER_CLASS = 1
    result = CliRunner().invoke(app, ["quickstart", "--out", str(out)], catch_exceptions=False)
    if result.exit_code != 0:
        sys.exit(f"quickstart failed ({result.exit_code}):\n{result.output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="store root (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help="tiny recipes, in-process")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tinycats-quickstart-") as tmp:
        out = args.out or Path(tmp) / "out"
        started = time.perf_counter()
        if args.smoke:
            before = resource.getrusage(resource.RUSAGE_SELF)
            run_smoke(out)
            after = resource.getrusage(resource.RUSAGE_SELF)
        else:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            command = [sys.executable, "-m", "tinycats", "quickstart", "--out", str(out)]
            subprocess.run(command, check=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter() - started
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    verdict = "met" if wall < GOAL_SECONDS else "missed on this host"
    if args.smoke:
        verdict = "not judged (tiny recipes)"
    print(
        f"quickstart{' --smoke' if args.smoke else ''}: {wall:.0f} s wall, "
        f"{user + system:.0f} s CPU (user {user:.0f} + system {system:.0f}), load average "
        f"{load:.1f} at the start on {os.cpu_count()} CPUs; goal: under {GOAL_SECONDS:.0f} s "
        f"wall on an idle 2-core CPU: {verdict}"
    )


if __name__ == "__main__":
    main()
