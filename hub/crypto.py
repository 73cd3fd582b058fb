"""Encryption of credentials at rest (AES-256-GCM).

The key comes from ``HUB_SECRET_KEY`` (any string; it is stretched with
SHA-256) or from ``<data_dir>/secret.key``, created on first run with 0600
permissions.
"""

from __future__ import annotations

import base64
import hashlib
import re
import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "v1:"


class DecryptionError(Exception):
    """Stored ciphertext could not be decrypted (wrong key or tampered)."""


class Cipher:
    def __init__(self, key_material: str | bytes):
        if isinstance(key_material, str):
            key_material = key_material.encode()
        self._aead = AESGCM(hashlib.sha256(key_material).digest())

    @classmethod
    def from_settings(cls, secret_key: str | None, data_dir: Path) -> Cipher:
        if secret_key:
            return cls(secret_key)
        path = data_dir / "secret.key"
        if not path.exists():
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
        return cls(path.read_text().strip())

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), None)
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, token: str) -> str:
        if not token.startswith(PREFIX):
            raise DecryptionError("unknown ciphertext format")
        raw = base64.urlsafe_b64decode(token[len(PREFIX):])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], None).decode()
        except InvalidTag:
            raise DecryptionError("ciphertext does not match the key") from None

    def encrypt_json(self, value: dict[str, Any]) -> str:
        return self.encrypt(json.dumps(value, default=str))

    def decrypt_json(self, token: str | None) -> dict[str, Any]:
        if not token:
            return {}
        return json.loads(self.decrypt(token))


def mask(secret: str | None) -> str | None:
    """A hint that identifies a secret without revealing it: ``sk_test_…4242``."""
    if not secret:
        return None
    secret = str(secret)
    if len(secret) <= 8:
        return "…" + secret[-2:] if len(secret) > 4 else "…"
    # Only a vendor's prefix (lower-case words: sk_test_, whsec_, access-sandbox-)
    # is shown, and only while at least half the secret stays hidden.
    prefix = _VENDOR_PREFIX.match(secret)
    head = prefix.group(0) if prefix else ""
    if len(head) + 4 > len(secret) // 2:
        head = ""
    return f"{head}…{secret[-4:]}"


_VENDOR_PREFIX = re.compile(r"(?:[a-z]{2,8}[_-]){1,2}")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
