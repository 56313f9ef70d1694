"""Export every retained version of a namespace, and re-seed an empty one from an export."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from configbus import lua
from configbus.errors import DamagedNamespace, NamespaceNotEmpty, StoreError
from configbus.records import Export, VersionRecord, parse_record, text_of
from configbus.redis_calls import guarded

if TYPE_CHECKING:
    from configbus.store import Store

_REPAIR = "; a publish (PUT, without If-Match) by an admin replaces it"


async def export(store: Store) -> Export:
    """Every retained version, for backup or re-seeding an empty store."""
    head = await store.head()
    if head.damage:
        raise DamagedNamespace(f"export: {head.damage}{_REPAIR}", epoch=head.epoch)
    nums = await guarded(store.redis.zrange(store.keys.history, 0, -1), "export")
    pipe = store.redis.pipeline(transaction=False)
    for n in nums:
        pipe.hgetall(store.keys.record(int(n)))
    rows = await guarded(pipe.execute(), "export") if nums else []
    records = [
        parse_record(fields, store.keys.record(int(n)))
        for n, fields in zip(nums, rows, strict=True)
        if fields  # trimmed between the two reads
    ]
    return Export(namespace=store.namespace, epoch=head.epoch, head=head.version, records=records)


async def import_(store: Store, data: Export, *, actor: str = "") -> int:
    """Re-seed an empty namespace from an export. Refuses a namespace that has a head.

    The imported versions keep their numbers but start a new epoch: a replica still
    holding a version of the old lineage (perhaps one the export lacks) follows the
    imported head instead of skipping it as "not newer"."""
    if data.head == 0 or not data.records or data.epoch is None:
        raise StoreError("import: the export holds no versions")
    if data.head not in {r.version for r in data.records}:
        raise StoreError(f"import: head version {data.head} is missing from the export")
    for r in data.records:
        r.verify()
    k = store.keys
    epoch = secrets.token_hex(8)
    args: list[Any] = [k.record_prefix, k.changes, actor, epoch, data.head, len(data.records)]
    for r in data.records:
        fields: list[Any] = []
        for name in VersionRecord.__struct_fields__:
            value = epoch if name == "epoch" else getattr(r, name)
            fields += [name, "" if value is None else value]
        args += [len(fields), *fields]
    res = await guarded(
        store.redis.register_script(lua.IMPORT)(
            keys=[k.seq, k.head, k.epoch, k.history, k.audit, k.rev], args=args
        ),
        "import",
    )
    if text_of(res[0]) == "not_empty":
        raise NamespaceNotEmpty(
            f"import: namespace {store.namespace!r} already has version {text_of(res[1])}; "
            "import only re-seeds an empty store"
        )
    return int(res[1])
