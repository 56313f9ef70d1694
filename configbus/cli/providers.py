"""`configbus providers models NAME` and `configbus providers test NAME`: ask a provider of
the published document, through the admin service and with its stored key, for its model
list or whether it answers. `test` exits 0 when the provider answered, 1 when it failed
(the provider's status and error are printed, the key blotted out)."""

from __future__ import annotations

import argparse

from configbus.cli.common import EXIT_OK, EXIT_REFUSED, admin_client, admin_flags, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "providers",
        help="discover a provider's models, test that it answers",
        description="Ask a provider of the published document with its stored key.",
    )
    inner = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, fn, help_ in (
        ("models", cmd_models, "list the models provider NAME offers"),
        ("test", cmd_test, "test provider NAME: status, latency, its error if any"),
    ):
        q = inner.add_parser(name, help=help_, description=help_)
        q.add_argument("name", metavar="NAME", help="the provider's name in the document")
        admin_flags(q, fn)


def cmd_models(args: argparse.Namespace) -> int:
    with admin_client(args) as c:
        res = c.provider_models(args.name)
    if args.json:
        print_json(res)
    else:
        for model in res.models:
            print(model)
    return EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    with admin_client(args) as c:
        res = c.test_provider(args.name)
    if args.json:
        print_json(res)
    elif res.ok:
        print(f"ok: {res.provider} answered {res.status} in {res.latency_ms:.0f} ms ({res.url})")
    else:
        what = f"answered {res.status}" if res.status is not None else "did not answer"
        print(f"failed: {res.provider} {what} after {res.latency_ms:.0f} ms ({res.url})")
        print(f"  {res.error}")
    if res.key == "env" and not args.json:
        print("  (its key is an environment variable of the replicas: asked without a key)")
    return EXIT_OK if res.ok else EXIT_REFUSED
