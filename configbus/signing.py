"""Record signatures: the admin vouches for a body it validated, so replicas need not
validate it again.

Semantic validation is most of what a replica spends applying a version (cross references,
fallback cycles, URL checks: ~4x the typed decode of a 10 KB document). The admin has run
exactly those checks before it publishes, so it signs the body's digest with a key derived
from the secret keys the admin and the replicas already share (`CONFIGBUS_SECRET_KEYS`):

    sig = HMAC-SHA256(derived key, "<rules>:<sha256 of the body>")

A replica that verifies the signature (with any of its keys) decodes the body strictly
(types, ranges, unknown fields) but skips the semantic pass; a record without a valid
signature (written by hand, by an older admin, restored from elsewhere, or tampered with)
gets the full validation as before. `RULES` names the validation rules the signature vouches
for: a configbus whose rules changed bumps it, and its replicas validate older records in
full again.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

RULES = "v1"
_CONTEXT = b"configbus record signature\0"


class RecordSigner:
    """Signs with the newest key, verifies with any."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("a signer needs at least one key")
        self._keys = [hashlib.sha256(_CONTEXT + k.encode()).digest() for k in keys]

    def sign(self, sha256: str) -> str:
        return self._mac(self._keys[0], sha256)

    def verify(self, sha256: str, sig: str) -> bool:
        if not sig:
            return False
        return any(hmac.compare_digest(self._mac(k, sha256), sig) for k in self._keys)

    @staticmethod
    def _mac(key: bytes, sha256: str) -> str:
        return hmac.new(key, f"{RULES}:{sha256}".encode(), hashlib.sha256).hexdigest()
