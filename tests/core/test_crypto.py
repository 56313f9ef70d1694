from __future__ import annotations

import pytest

from configbus.codec import canonical
from configbus.crypto import (
    SecretBox,
    decrypt_secrets,
    encrypt_secrets,
    generate_key,
    mask_secrets,
    reencrypt_secrets,
    secrets_of,
    unmask_secrets,
)
from configbus.errors import InvalidDocument, SecretError, SettingsError
from configbus.testing import sample_document

SECRET = "sk-upstream-secret-a"


def test_encrypt_then_decrypt_roundtrip() -> None:
    box = SecretBox([generate_key()])
    stored = encrypt_secrets(sample_document(), box)
    assert SECRET.encode() not in canonical(stored)
    assert decrypt_secrets(stored, box) == sample_document()


def test_rotation_new_key_first_old_still_decrypts() -> None:
    old, new = generate_key(), generate_key()
    stored = encrypt_secrets(sample_document(), SecretBox([old]))
    rotated_box = SecretBox([new, old])
    rotated = reencrypt_secrets(stored, rotated_box)
    assert rotated != stored
    # After rotation the old key can be dropped.
    assert decrypt_secrets(rotated, SecretBox([new])) == sample_document()
    with pytest.raises(SecretError, match=r"providers\[0\].api_key: cannot decrypt"):
        decrypt_secrets(stored, SecretBox([new]))


def test_replica_refuses_plaintext_in_stored_document() -> None:
    with pytest.raises(SecretError, match="plaintext secret found"):
        decrypt_secrets(sample_document(), SecretBox([generate_key()]))


def test_masked_secret_sent_back_keeps_stored_secret() -> None:
    box = SecretBox([generate_key()])
    stored = encrypt_secrets(sample_document(), box)
    shown = mask_secrets(stored)
    assert SECRET not in repr(shown)
    assert all(s.masked for _, s in secrets_of(shown))
    assert unmask_secrets(shown, stored) == stored


def test_unknown_mask_is_an_error_with_path() -> None:
    box = SecretBox([generate_key()])
    stored = encrypt_secrets(sample_document(), box)
    shown = mask_secrets(stored)
    other = encrypt_secrets(sample_document(), box)  # new ciphertext, new mask
    with pytest.raises(InvalidDocument, match=r"providers\[0\].api_key: masked secret matches"):
        unmask_secrets(shown, other)


def test_bad_keys_are_settings_errors() -> None:
    with pytest.raises(SettingsError, match="key #2 is not a valid Fernet key"):
        SecretBox([generate_key(), "short"])
    with pytest.raises(SettingsError, match="at least one"):
        SecretBox([])


def test_same_plaintext_keeps_the_stored_token_so_republishing_is_a_noop() -> None:
    box = SecretBox([generate_key()])
    stored = encrypt_secrets(sample_document(), box)
    again = encrypt_secrets(sample_document(), box, previous=stored)
    assert canonical(again) == canonical(stored)
    changed = encrypt_secrets(sample_document(api_key="sk-new-key"), box, previous=stored)
    assert canonical(changed) != canonical(stored)
    assert decrypt_secrets(changed, box) == sample_document(api_key="sk-new-key")
