"""Bytes in, bytes out: parsing JSON / YAML / TOML input and the canonical stored encoding.

The canonical form is msgspec JSON with deterministic key order and defaults omitted, so
equal documents give equal bytes and equal sha256: that is what makes "publish a body
identical to head" a no-op and what checksums are computed over.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from configbus.document import Document
from configbus.errors import InvalidDocument, Issue
from configbus.validation import issue_from_msgspec, semantic_issues, to_document

Format = Literal["json", "yaml", "toml"]

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
    """Parse text into plain Python values; syntax errors name the source and the line."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidDocument([Issue("", f"{source}: not UTF-8 ({exc.reason})")]) from None
    try:
        if fmt == "yaml":
            return yaml.safe_load(text)
        if fmt == "toml":
            return tomllib.loads(text)
        return json.loads(text)
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


def load_file(path: str | Path) -> Document:
    """Read and check a document file (format from its suffix)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InvalidDocument([Issue("", f"{p}: cannot read: {exc.strerror}")]) from None
    return to_document(parse(raw, guess_format(p.name), source=str(p)))


def decode_body(body: bytes) -> Document:
    """Decode and check a stored (canonical JSON) body. The fast path for replicas."""
    try:
        doc = _decoder.decode(body)
    except msgspec.ValidationError:
        # Slow path only on failure: collect every structural issue with its path.
        try:
            data = _any_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise InvalidDocument([issue_from_msgspec(exc, "")]) from None
        to_document(data)  # raises with all issues
        raise  # pragma: no cover - to_document always raises here
    except msgspec.DecodeError as exc:
        raise InvalidDocument([Issue("", f"not valid JSON: {exc}")]) from None
    issues = semantic_issues(doc)
    if issues:
        raise InvalidDocument(issues)
    return doc


def to_builtins(doc: msgspec.Struct) -> Any:
    """Plain dicts/lists for display and JSON responses (defaults omitted, like storage)."""
    # Through JSON rather than msgspec.to_builtins, which keeps the document's tuples.
    return _any_decoder.decode(_encoder.encode(doc))
