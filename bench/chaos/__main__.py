"""`python -m bench.chaos --minutes 10` (or `python bench/chaos ...`): run the soak, print
its JSON summary; exit 0 when every check holds."""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/chaos`, the checkout is not on the path yet.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import argparse
import asyncio
import json
import random
import shutil
import tempfile

import bench.chaos
from bench.chaos.soak import soak


def main(argv: list[str] | None = None) -> int:
    doc = bench.chaos.__doc__ or ""
    p = argparse.ArgumentParser(prog="bench.chaos", description=doc.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=random.SystemRandom().randrange(10**6))
    p.add_argument("--concurrency", type=int, default=2, help="client loops per replica")
    p.add_argument("--run-dir", help="logs and files here (kept); default a temp dir")
    p.add_argument("--json-out", help="also write the summary here")
    p.add_argument("--keep", action="store_true", help="keep the temp run dir on success")
    p.add_argument(
        "--no-netns",
        action="store_true",
        help="no network namespace fault even as root (it is skipped anyway when not root)",
    )
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="configbus-chaos-")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        summary = asyncio.run(
            soak(args.minutes, run_dir, args.seed, args.concurrency, netns=not args.no_netns)
        )
    except asyncio.CancelledError:
        print(f"interrupted; everything it started is stopped. logs: {run_dir}", file=sys.stderr)
        return 130
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text)
    if summary.get("ok") and not args.run_dir and not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        print(f"logs: {run_dir}", file=sys.stderr)
    return 0 if summary.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
