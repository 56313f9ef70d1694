"""`configbus keygen`: print a new Fernet key for CONFIGBUS_SECRET_KEYS."""

from __future__ import annotations

import argparse

from configbus.crypto import generate_key


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keygen", help="print a new secret key for CONFIGBUS_SECRET_KEYS")
    p.set_defaults(func=lambda args: print(generate_key()) or 0)
