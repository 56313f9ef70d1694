"""`configbus migrate FILE`: print the document in FILE migrated to the current schema
(YAML for a .yaml/.yml file, else JSON); the steps applied go to stderr. Exit 0 when the
migrated document is valid, 1 when it is not (every issue on stderr), 2 when the file
cannot be read."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from configbus.cli.common import read_input
from configbus.codec import guess_format
from configbus.document import CURRENT_SCHEMA
from configbus.errors import InvalidDocument
from configbus.migrations import migrate
from configbus.validation import to_document


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_ = f"print a document file migrated to the current schema ({CURRENT_SCHEMA})"
    p = sub.add_parser("migrate", help=help_, description=__doc__)
    p.add_argument("file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    fmt = guess_format(path.name)
    try:
        data, applied = migrate(read_input(path, fmt))
        to_document(data)
    except InvalidDocument as exc:
        print(f"configbus migrate: {path}: invalid document:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return 1
    for line in applied or [f"already schema {CURRENT_SCHEMA}: nothing to migrate"]:
        print(line, file=sys.stderr)
    if fmt == "yaml":
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    else:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    return 0
