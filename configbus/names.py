"""The namespace rule, declared once: the store, settings, the admin's paths, the CLI and
the OpenAPI spec all read it from here, so a replica can never follow a namespace the
admin cannot address.
"""

from __future__ import annotations

import re

from configbus.errors import SettingsError

DEFAULT_NAMESPACE = "default"
# Letters, digits and . _ - only: safe inside a Redis hash tag (no '{}'), a key (no ':'),
# a URL path segment and a file name.
NAMESPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
NAMESPACE_RULE = "1-128 letters, digits and . _ - (starting with a letter or digit)"
_NAMESPACE = re.compile(NAMESPACE_PATTERN)


def is_namespace(name: str) -> bool:
    return _NAMESPACE.fullmatch(name) is not None


def check_namespace(name: str, *, where: str = "namespace") -> str:
    """`name` when it follows the rule; else a SettingsError naming `where` and the rule."""
    if not is_namespace(name):
        raise SettingsError(f"{where}: {name!r} is not a valid namespace: {NAMESPACE_RULE}")
    return name
