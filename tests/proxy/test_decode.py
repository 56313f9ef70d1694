from __future__ import annotations

import msgspec
import pytest
from msgspec import inspect as mi

from configbus.codec import canonical, decode_body
from configbus.crypto import SecretBox, decrypt_secrets, encrypt_secrets, generate_key
from configbus.document import Document, Secret
from configbus.errors import SecretError
from configbus.testing import sample_document
from proxy.decode import ONLY_PROVIDER_KEYS, decrypt_provider_keys, make_decoder, secret_paths

KEY = generate_key()


def stored_body() -> bytes:
    return canonical(encrypt_secrets(sample_document(), SecretBox([KEY])))


def test_schema_has_only_provider_api_keys_as_secrets() -> None:
    assert secret_paths(mi.type_info(Document)) == {"providers[].api_key"}
    assert ONLY_PROVIDER_KEYS


def test_fast_path_equals_the_generic_walker() -> None:
    doc = decode_body(stored_body())
    box = SecretBox([KEY])
    assert decrypt_provider_keys(doc, box) == decrypt_secrets(doc, box)
    decoded = make_decoder((KEY,))(stored_body())
    assert decoded.providers[0].api_key == Secret(secret="sk-upstream-secret-a")
    assert decoded.providers[1].api_key is None


@pytest.mark.parametrize(
    ("secret", "message"),
    [(Secret(secret="plain"), "plaintext secret"), (Secret(masked="sha256:x"), "masked secret")],
)
def test_refuses_plaintext_and_masked_secrets(secret: Secret, message: str) -> None:
    doc = sample_document()
    p0 = msgspec.structs.replace(doc.providers[0], api_key=secret)
    doc = msgspec.structs.replace(doc, providers=[p0, *doc.providers[1:]])
    with pytest.raises(SecretError, match=rf"providers\[0\]\.api_key: {message}"):
        decrypt_provider_keys(doc, SecretBox([KEY]))


def test_wrong_key_and_missing_keys_are_refused() -> None:
    with pytest.raises(SecretError, match="cannot decrypt"):
        make_decoder((generate_key(),))(stored_body())
    with pytest.raises(SecretError, match="CONFIGBUS_SECRET_KEYS is not set"):
        make_decoder(())(stored_body())
