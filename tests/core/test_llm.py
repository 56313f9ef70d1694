from __future__ import annotations

import msgspec
import pytest

from configbus.codec import canonical
from configbus.crypto import SecretBox, encrypt_secrets, generate_key
from configbus.document import Document, Secret
from configbus.errors import SecretError
from configbus.llm import document_decoder
from configbus.testing import sample_document

KEY = generate_key()


def stored(doc: Document | None = None) -> bytes:
    return canonical(encrypt_secrets(doc or sample_document(), SecretBox([KEY])))


def with_key(secret: Secret) -> Document:
    doc = sample_document()
    p0 = msgspec.structs.replace(doc.providers[0], api_key=secret)
    return msgspec.structs.replace(doc, providers=[p0, *doc.providers[1:]])


def test_replica_decoder_decrypts_provider_keys() -> None:
    doc = document_decoder(SecretBox([KEY]))(stored())
    assert doc.providers[0].api_key == Secret(secret="sk-upstream-secret-a")
    assert doc.providers[1].api_key is None
    assert doc == sample_document()


@pytest.mark.parametrize(
    ("secret", "message"),
    [(Secret(secret="plain"), "plaintext secret"), (Secret(masked="sha256:x"), "masked secret")],
)
def test_replica_decoder_refuses_plaintext_and_masked_secrets(secret: Secret, message: str) -> None:
    body = canonical(with_key(secret))
    with pytest.raises(SecretError, match=rf"providers\[0\]\.api_key: {message}"):
        document_decoder(SecretBox([KEY]))(body)


def test_wrong_key_and_missing_keys_are_refused() -> None:
    with pytest.raises(SecretError, match=r"providers\[0\]\.api_key: cannot decrypt"):
        document_decoder(SecretBox([generate_key()]))(stored())
    with pytest.raises(SecretError, match="CONFIGBUS_SECRET_KEYS is not set"):
        document_decoder(None)(stored())
