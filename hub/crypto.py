"""Encryption of credentials at rest (AES-256-GCM).

The key comes from ``HUB_SECRET_KEY`` (any string; it is stretched with
SHA-256) or from ``<data_dir>/secret.key``, created on first run with 0600
permissions. ``HUB_PREVIOUS_SECRET_KEY`` still decrypts what an earlier key
encrypted, so that a key can be replaced: ``hub reencrypt`` then rewrites
every stored secret with the current key, and the previous one can go.
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

from hub.types import HubError

PREFIX = "v1:"


class DecryptionError(HubError):
    """Stored secrets could not be decrypted: the hub's secret key is not the
    one that encrypted them (``HUB_SECRET_KEY`` or ``<data_dir>/secret.key``
    changed), or they were tampered with. The connection works again once the
    key is back (or set as ``HUB_PREVIOUS_SECRET_KEY``), or once it is given
    its credentials again."""

    code = "credentials_unreadable"
    status = 409


UNREADABLE = ("the stored secrets cannot be decrypted with this hub's secret key (HUB_SECRET_KEY, or secret.key in "
              "the data directory, is not the one that encrypted them): the operator can restore that key, or set it "
              "as HUB_PREVIOUS_SECRET_KEY; otherwise give the connection its credentials again (or connect again)")


def _aead(key_material: str | bytes) -> AESGCM:
    if isinstance(key_material, str):
        key_material = key_material.encode()
    return AESGCM(hashlib.sha256(key_material).digest())


#: The shortest key a key file may hold (one the hub writes has 64).
MIN_KEY_FILE_CHARACTERS = 32


class Cipher:
    """Encrypts with the current key; decrypts with it or a previous one."""

    def __init__(self, key_material: str | bytes, previous: str | bytes | None = None):
        self._aead = _aead(key_material)
        self._decrypting = [self._aead] + ([_aead(previous)] if previous else [])

    @classmethod
    def from_settings(cls, secret_key: str | None, data_dir: Path, previous_secret_key: str | None = None) -> Cipher:
        if secret_key:
            return cls(secret_key, previous_secret_key)
        path = data_dir / "secret.key"
        if not path.exists():
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Written whole beside it, then linked into place: a failed write (a full disk, a
            # crash) leaves no key file, never an empty one; of two first starts, one key wins.
            draft = data_dir / f".secret.key.{secrets.token_hex(8)}"
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
                    handle.flush()
                    os.fsync(handle.fileno())
                try:
                    os.link(draft, path)
                except FileExistsError:
                    pass  # (another process's first start made it: that one is the key)
            finally:
                draft.unlink(missing_ok=True)
        key = path.read_text().strip()
        if len(key) < MIN_KEY_FILE_CHARACTERS:
            # (An empty one, left by an older hub's failed first write, would seal every secret
            # with a key anyone can work out.)
            raise OSError(f"{path} holds no key of {MIN_KEY_FILE_CHARACTERS} characters or more: restore it from a "
                          f"backup, or remove it if no secret was stored yet")
        return cls(key, previous_secret_key)

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), None)
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, token: str) -> str:
        """:raises DecryptionError: no key this hub has encrypted ``token``."""
        return self._open(token)[0]

    def reencrypt(self, token: str) -> str | None:
        """``token`` encrypted with the current key instead of a previous one;
        None when it is under the current key already.

        :raises DecryptionError: no key this hub has encrypted ``token``."""
        plaintext, aead = self._open(token)
        return None if aead is self._aead else self.encrypt(plaintext)

    def _open(self, token: str) -> tuple[str, AESGCM]:
        if not token.startswith(PREFIX):
            raise DecryptionError(UNREADABLE + " (not a ciphertext of this hub)")
        try:
            raw = base64.urlsafe_b64decode(token[len(PREFIX):])
        except ValueError:
            raise DecryptionError(UNREADABLE + " (not a ciphertext of this hub)") from None
        for aead in self._decrypting:
            try:
                return aead.decrypt(raw[:12], raw[12:], None).decode(), aead
            except InvalidTag:
                continue
        raise DecryptionError(UNREADABLE)

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
