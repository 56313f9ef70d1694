"""Bearer-token authentication and the role → permission table."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Literal

from admin.settings import Role, Token, hash_token

# `steer`: promote or abort a running rollout.
Permission = Literal["read", "validate", "publish", "rollback", "rotate", "import", "steer"]

PERMISSIONS: dict[Role, frozenset[Permission]] = {
    "viewer": frozenset({"read"}),
    "publisher": frozenset({"read", "validate", "publish", "steer"}),
    "sre": frozenset({"read", "rollback", "steer"}),
    "admin": frozenset({"read", "validate", "publish", "rollback", "rotate", "import", "steer"}),
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]


class TokenTable:
    """Holds token digests only; looks a presented token up in constant time per entry."""

    def __init__(self, tokens: Iterable[Token]) -> None:
        self._tokens = tuple(tokens)

    def lookup(self, authorization: str | None) -> Token | None:
        """The token an `Authorization: Bearer <token>` header names, or None."""
        if not authorization:
            return None
        scheme, _, presented = authorization.partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            return None
        digest = hash_token(presented).encode()
        found = None
        for token in self._tokens:  # no early exit: timing does not depend on the match
            if hmac.compare_digest(digest, token.sha256.encode()):
                found = token
        return found
