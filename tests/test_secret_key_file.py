"""A secret.key left empty by a first run that failed to write it
(disk full, a crash between creating the file and writing the key) must not
become the hub's key: every credential would be sealed with a key anyone can
derive (SHA-256 of the empty string)."""
from __future__ import annotations

import errno

import pytest

from hub.crypto import Cipher, DecryptionError


def test_a_secret_key_file_left_empty_by_a_failed_first_write_is_not_used_as_the_key(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    real_fdopen = __import__("os").fdopen

    class FullDisk:
        def __init__(self, fd, mode):
            self.handle = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, _text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("hub.crypto.os.fdopen", FullDisk)
    with pytest.raises(OSError):
        Cipher.from_settings(None, data_dir)  # the first start fails, and says so (Hub makes it a SettingsError)
    monkeypatch.undo()
    assert not (data_dir / "secret.key").exists()  # the failed write left no key file

    # An empty one (an older hub's failed write left it so) is refused, not taken for a key.
    (data_dir / "secret.key").write_text("")
    with pytest.raises(OSError, match="holds no key"):
        Cipher.from_settings(None, data_dir)
    (data_dir / "secret.key").unlink()

    # The next start, space freed: whatever it does (refuse, or make a real key), the key it seals
    # credentials with must not be the empty one.
    try:
        cipher = Cipher.from_settings(None, data_dir)
    except Exception:
        return  # refused with an error: fine
    sealed = cipher.encrypt('{"refresh_token": "rt_live"}')
    with pytest.raises(DecryptionError):
        Cipher("").decrypt(sealed)
