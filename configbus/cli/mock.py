"""`configbus mock-upstream`: a fake OpenAI / Anthropic upstream for tests and benchmarks."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("mock-upstream", help="run a fake LLM upstream (OpenAI + Anthropic API)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9001)
    p.add_argument("--name", default="mock", help="named in every answer ('served by NAME')")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from configbus.tooling.mock_upstream import run

    run(args.host, args.port, args.name)
    return 0
