"""The LLM proxy document on the bus: how a replica turns a stored body into a Document."""

from __future__ import annotations

from collections.abc import Callable

from configbus.codec import decode_body
from configbus.crypto import SecretBox, decrypt_secrets, secrets_of
from configbus.document import Document
from configbus.errors import SecretError


def document_decoder(
    box: SecretBox | None, *, semantic: bool = True
) -> Callable[[bytes], Document]:
    """bytes → checked Document with secrets decrypted: the watcher's `decode` for replicas
    (`semantic=False`: its `decode_signed`, for bodies the admin signed)."""

    def decode(body: bytes) -> Document:
        doc = decode_body(body, semantic=semantic)
        if box is None:
            if secrets_of(doc):
                raise SecretError("document has secrets but CONFIGBUS_SECRET_KEYS is not set")
            return doc
        return decrypt_secrets(doc, box)

    return decode
