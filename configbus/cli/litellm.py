"""`configbus import-litellm CONFIG [-o FILE]`: a LiteLLM proxy config as a configbus
document (YAML on stdout, or in FILE); every setting not carried over is listed on stderr.
Exit 0 when the document is valid, 1 when it is not (its issues on stderr), 2 when the file
cannot be read or is not a LiteLLM config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from configbus.cli.common import read_input
from configbus.codec import Format
from configbus.errors import ConfigBusError, InvalidDocument
from configbus.tooling.litellm import convert
from configbus.validation import to_document


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_ = "convert a LiteLLM proxy config.yaml into a configbus document"
    p = sub.add_parser("import-litellm", help=help_, description=__doc__)
    p.add_argument("config", help="the LiteLLM config (YAML or JSON)")
    p.add_argument("-o", "--output", help="write the document here instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.config)
    fmt: Format = "json" if path.suffix.lower() == ".json" else "yaml"  # YAML holds JSON too
    try:
        conversion = convert(read_input(path, fmt))
    except InvalidDocument as exc:  # not YAML at all
        raise ConfigBusError("; ".join(str(i) for i in exc.issues)) from None
    except ValueError as exc:
        raise ConfigBusError(f"{path}: {exc}") from None
    text = yaml.safe_dump(conversion.document, sort_keys=False, allow_unicode=True)
    if conversion.dropped:
        print(f"not carried over from {path} ({len(conversion.dropped)}):", file=sys.stderr)
        for line in conversion.dropped:
            print(f"  {line}", file=sys.stderr)
    try:
        to_document(conversion.document)
    except InvalidDocument as exc:
        print("configbus import-litellm: the converted document is not valid:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return 1
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            raise ConfigBusError(f"{args.output}: cannot write: {exc.strerror}") from None
    else:
        sys.stdout.write(text)
    return 0
