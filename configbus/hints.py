"""What a message on the change channel says.

A hint is `{version, sha256, epoch, rev[, rollout][, traceparent]}`: "the namespace changed, here is what
it changed to". A plain publish whose body is small enough (the publisher's inline limit)
also carries its whole record: the JSON header, a newline, then the body. A replica may
apply that record without reading Redis, under the rule in `inline_applies`; anything else
(a rollout step, a missing or mismatched body, another epoch) makes it read the store,
which stays the truth.
"""

from __future__ import annotations

import re

import msgspec

from configbus.codec import sha256_hex
from configbus.records import VersionRecord


class Hint(msgspec.Struct, frozen=True):
    version: int
    sha256: str = ""
    epoch: str = ""
    rev: int = 0  # the namespace's change count once this change was made (0: not said)
    rollout: bool = False  # a rollout started, moved or ended: who runs what may change
    traceparent: str = ""  # W3C trace context of the publish, when the admin traced it
    # Present only when the body follows the header (a plain publish):
    parent: int | None = None
    created_at: float | None = None
    kind: str = ""
    author: str = ""
    message: str = ""
    source: int | None = None
    sig: str = ""


_decoder = msgspec.json.Decoder(Hint)
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def parse_traceparent(value: str) -> tuple[int, int, int] | None:
    """(trace id, span id, flags) of a W3C traceparent (version 00), or None."""
    m = _TRACEPARENT.match(value)
    if m is None:
        return None
    trace_id, span_id = int(m[1], 16), int(m[2], 16)
    return (trace_id, span_id, int(m[3], 16)) if trace_id and span_id else None


def parse_hint(data: bytes) -> tuple[Hint, VersionRecord | None]:
    """The hint, and the record it carries when it carries a whole one whose body matches
    its checksum (else None: the replica reads the store). DecodeError on junk."""
    header, newline, body = data.partition(b"\n")
    hint = _decoder.decode(header)
    if not newline or hint.rollout or hint.parent is None or hint.created_at is None:
        return hint, None
    if sha256_hex(body) != hint.sha256:
        return hint, None  # damaged or not what it claims: the store decides
    record = VersionRecord(
        version=hint.version,
        parent=hint.parent,
        epoch=hint.epoch,
        sha256=hint.sha256,
        author=hint.author,
        message=hint.message,
        created_at=hint.created_at,
        kind=hint.kind,
        source=hint.source,
        body=body,
        sig=hint.sig,
    )
    return hint, record


def inline_applies(record: VersionRecord, held: tuple[str, int] | None) -> bool:
    """May a replica holding `held` (epoch, version) apply a hinted record without a read?

    Only a plain publish carries a record, and a plain publish is refused while a rollout
    runs, so the record was head for every replica when it was written. It is applied only
    on top of a version of the same lineage that it is newer than: a new epoch, a replica
    with nothing yet, or a hint older than what runs all go through the store's read."""
    return held is not None and record.epoch == held[0] and record.version > held[1]


def is_news(hint: Hint, epoch: str, version: int, sha256: str) -> bool:
    """Does a hint say something a replica running (epoch, version, sha256) must read?"""
    return (
        hint.rollout
        or hint.epoch != epoch
        or hint.version > version
        or (hint.version == version and hint.sha256 != sha256)
    )
