"""Bytes in, bytes out: parsing JSON / YAML / TOML input and the canonical stored encoding.

The canonical form is msgspec JSON with deterministic key order and defaults omitted, so
equal documents give equal bytes and equal sha256: that is what makes "publish a body
identical to head" a no-op and what checksums are computed over.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from configbus.document import CURRENT_SCHEMA, Document
from configbus.errors import InvalidDocument, Issue
from configbus.validation import issue_from_msgspec, semantic_issues, to_document

Format = Literal["json", "yaml", "toml"]

# Input limits: a document is a few levels deep, so anything deeper is a mistake or an
# attack (deep nesting crashes recursive parsers); YAML aliases may not expand a document
# past MAX_NODES values (the "billion laughs").
MAX_DEPTH = 64
MAX_NODES = 1_000_000

_encoder = msgspec.json.Encoder(order="deterministic")
_decoder = msgspec.json.Decoder(Document)
_any_decoder = msgspec.json.Decoder()


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical(doc: msgspec.Struct) -> bytes:
    """The stored encoding of a document: deterministic, defaults omitted."""
    if isinstance(doc, Document):
        # A document built in Python may hold lists where the schema has tuples, and an
        # empty list is not the empty-tuple default: bring it to the decoded form first, so
        # equal documents give equal bytes however they were made.
        doc = msgspec.convert(msgspec.to_builtins(doc), Document)
    return _encoder.encode(doc)


def guess_format(name: str) -> Format:
    suffix = Path(name).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".toml":
        return "toml"
    return "json"


def parse(text: str | bytes, fmt: Format = "json", *, source: str = "<input>") -> Any:
    """Parse text into plain Python values, refusing duplicate keys, nesting deeper than
    MAX_DEPTH and YAML aliases that expand past MAX_NODES; errors name the source and the
    line."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidDocument([Issue("", f"{source}: not UTF-8 ({exc.reason})")]) from None
    try:
        if fmt == "yaml":
            data = _yaml(text, source)
        elif fmt == "toml":
            data = tomllib.loads(text)
        else:
            data = json.loads(text, object_pairs_hook=_unique_keys)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidDocument([Issue("", f"{source}:{where} invalid YAML: {problem}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidDocument([Issue("", f"{source}: invalid TOML: {exc}")]) from None
    except json.JSONDecodeError as exc:
        raise InvalidDocument(
            [Issue("", f"{source}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}")]
        ) from None
    except _DuplicateKey as exc:
        raise InvalidDocument([Issue("", f"{source}: {exc}")]) from None
    except RecursionError:
        raise InvalidDocument(
            [Issue("", f"{source}: nested deeper than {MAX_DEPTH} levels")]
        ) from None
    check_depth(data, source)
    return data


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"duplicate key {key!r}")
        out[key] = value
    return out


def check_depth(data: Any, source: str = "<input>") -> None:
    """Refuse values nested deeper than MAX_DEPTH (iteratively: no recursion to exhaust), and
    NaN or infinities (YAML's .nan, TOML's inf, JSON's NaN extension), which no JSON body
    can carry: the same file must get the same verdict offline and through the admin."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            children = [(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()]
        elif isinstance(value, list):
            children = [(v, f"{path}[{i}]") for i, v in enumerate(value)]
        else:
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidDocument([Issue(path, f"{source}: {value} is not a JSON number")])
            continue
        if depth > MAX_DEPTH:
            raise InvalidDocument([Issue(path, f"{source}: nested deeper than {MAX_DEPTH} levels")])
        stack.extend((child, depth + 1, where) for child, where in children)


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no types
    """PyYAML's safe loader, refusing duplicate keys (it keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def _yaml(text: str, source: str) -> Any:
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_NODES:
            raise InvalidDocument(
                [Issue("", f"{source}: YAML aliases expand past {MAX_NODES:,} values")]
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node) -> int:
    """How many values the document has once every alias is expanded, computed over the
    node graph (an alias is the anchored node itself) without expanding anything."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # post-order: a node's size once all its children have theirs
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done:
            total = 1 + sum(sizes[id(c)] for c in children)
            sizes[id(node)] = min(MAX_NODES + 1, total)
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def load_file(path: str | Path) -> Document:
    """Read and check a document file (format from its suffix)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InvalidDocument([Issue("", f"{p}: cannot read: {exc.strerror}")]) from None
    return to_document(parse(raw, guess_format(p.name), source=str(p)))


def decode_body(body: bytes, *, semantic: bool = True) -> Document:
    """Decode and check a stored (canonical JSON) body. The fast path for replicas.
    `semantic=False` skips the cross-reference checks: only for a body whose signature
    says the admin ran them (`configbus.signing`); types and ranges are always checked."""
    try:
        return _decode_body(body, semantic)
    except RecursionError:  # msgspec nests as deep as the stack goes (tests/core/test_fuzz.py)
        raise InvalidDocument([Issue("", f"nested deeper than {MAX_DEPTH} levels")]) from None


def _decode_body(body: bytes, semantic: bool = True) -> Document:
    try:
        doc = _decoder.decode(body)
    except msgspec.ValidationError:
        # Slow path only on failure: collect every structural issue with its path.
        try:
            data = _any_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise InvalidDocument([issue_from_msgspec(exc, "")]) from None
        # Raises with all issues, unless the body is of an older schema that migrates.
        return to_document(data)
    except msgspec.DecodeError as exc:
        raise InvalidDocument([Issue("", f"not valid JSON: {exc}")]) from None
    except (
        RecursionError
    ):  # msgspec nests as deep as the stack goes (found by tests/core/test_fuzz.py)
        raise InvalidDocument([Issue("", f"nested deeper than {MAX_DEPTH} levels")]) from None
    if doc.schema_version != CURRENT_SCHEMA:  # stored by an older (or newer) configbus
        return to_document(_any_decoder.decode(body))  # migrates, or refuses a newer one
    if not semantic:
        return doc
    issues = semantic_issues(doc)
    if issues:
        raise InvalidDocument(issues)
    return doc


def to_builtins(doc: msgspec.Struct) -> Any:
    """Plain dicts/lists for display and JSON responses (defaults omitted, like storage)."""
    # Through JSON rather than msgspec.to_builtins, which keeps the document's tuples.
    return _any_decoder.decode(_encoder.encode(doc))
