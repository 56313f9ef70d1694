"""A replica whose document clients carry a budget and a team, as collection keys do.

Test-only, and temporary: budgets belong to collection keys (`ClientKey.budget`), which the
proxy does not authenticate yet; until it does, this is how a test gives replica processes
a key with a budget. Document metadata `budget.<client>: "<usd>/<day|month|total>"` and
`team.<client>: "<team>"` are set on that client's runtime; the rest is the real replica.

    python -m tests.proxy.usage_shim proxy --port N
"""

from __future__ import annotations

import sys
from typing import Any

from configbus.cli import main
from configbus.document import Budget
from proxy import runtime

_build = runtime.Builder.build


def build(self: runtime.Builder, doc: Any, prev: Any) -> runtime.Runtime:
    rt = _build(self, doc, prev)
    for c in rt.clients.values():
        spec = doc.metadata.get(f"budget.{c.name}")
        if isinstance(spec, str):
            usd, period = spec.split("/")
            c.budget = Budget(limit_usd=float(usd), period=period)  # type: ignore[arg-type]
        team = doc.metadata.get(f"team.{c.name}")
        if isinstance(team, str):
            c.team = team
    return rt


runtime.Builder.build = build  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
