"""Encrypted passwords: ``enc:`` tokens (Fernet: AES-128-CBC + HMAC-SHA256).

The key comes from ``ETL_SECRET_KEY`` (the key itself) or a key file outside the
repository (``ETL_SECRET_KEY_FILE``, default ``~/.config/etl_assets/secret.key``).
Resources keep the token, never the clear text, and decrypt only when they connect, so
the value cannot reach Dagster's resource config, run metadata or the UI.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

ENC_PREFIX = "enc:"
# A token inside a longer text (pasted into a value, or a parameter substituted into one).
ENC_TOKEN = re.compile(r"enc:[A-Za-z0-9_\-]{16,}")
# A plain dev password is replaced by a reference ("plain:database.password"); the value
# stays in this process's memory; another process (a run worker) loads the settings file
# itself when it builds the definitions, which fills its own. Resource config never holds
# it, and the reference is stable, so the code location's snapshot does not change from one
# load to the next.
PLAIN_PREFIX = "plain:"
_PLAIN_VALUES: dict[str, str] = {}
DEFAULT_KEY_FILE = Path("~/.config/etl_assets/secret.key")


class SecretError(Exception):
    """A secret cannot be decrypted or the key is missing. Never carries the value."""


def key_file_path() -> Path:
    """Where the key file is looked for (and where ``init-key`` writes it)."""
    return Path(os.environ.get("ETL_SECRET_KEY_FILE", str(DEFAULT_KEY_FILE))).expanduser()


def load_key() -> bytes:
    """The project key from ``ETL_SECRET_KEY`` or the key file; SecretError if none."""
    env_key = os.environ.get("ETL_SECRET_KEY", "").strip()
    if env_key:
        key = env_key.encode()
        source = "ETL_SECRET_KEY"
    else:
        path = key_file_path()
        if not path.is_file():
            raise SecretError(
                f"no secret key: set ETL_SECRET_KEY or create the key file {path} with 'etl-assets init-key'"
            )
        key = path.read_bytes().strip()
        source = str(path)
    try:
        Fernet(key)
    except (ValueError, TypeError):
        raise SecretError(f"the secret key from {source} is not a valid Fernet key") from None
    return key


def init_key(path: Path | None = None, *, force: bool = False) -> Path:
    """Create a new key file readable by its owner only (0600)."""
    path = (path or key_file_path()).expanduser()
    if path.exists() and not force:
        raise SecretError(f"key file {path} exists already: refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(Fernet.generate_key() + b"\n")
    os.chmod(path, 0o600)
    return path


def encrypt(plain: str, key: bytes | None = None) -> str:
    """Encrypt a password into an ``enc:`` token for the settings file."""
    return ENC_PREFIX + Fernet(key or load_key()).encrypt(plain.encode()).decode()


def wrap_plain(plain: str, setting: str) -> str:
    """Keep a plain (dev) password in memory; return the reference that stands for it."""
    _PLAIN_VALUES[setting] = plain
    return PLAIN_PREFIX + setting


def is_encrypted(value: str) -> bool:
    """True for a token written by ``encrypt-password``."""
    return value.startswith(ENC_PREFIX)


def holds_token(value: str) -> bool:
    """True for a token, or a text with one inside: where a token may not stand, a token
    pasted or substituted into a longer text is one too."""
    return is_encrypted(value) or ENC_TOKEN.search(value) is not None


def _plain_value(setting: str) -> str:
    try:
        return _PLAIN_VALUES[setting]
    except KeyError:
        raise SecretError(
            f"{setting}: no plain password of that name in this process: load the settings first "
            "(every process that builds the definitions does)"
        ) from None


def decrypt(token: str, setting: str = "secret") -> str:
    """Clear text of a token; the error names the setting, never the value."""
    if token.startswith(PLAIN_PREFIX):
        return _plain_value(token[len(PLAIN_PREFIX) :])
    if token.startswith(ENC_PREFIX):
        try:
            fernet, body = Fernet(load_key()), token[len(ENC_PREFIX) :]
        except SecretError as exc:  # no key at hand: say which secret needed it
            raise SecretError(f"{setting}: {exc}") from None
    else:
        raise SecretError(f"{setting}: not an encrypted token")
    try:
        return fernet.decrypt(body.encode()).decode()
    except InvalidToken:
        raise SecretError(
            f"{setting}: the token cannot be decrypted with the current key "
            "(encrypted with another key, or damaged): encrypt it again with this installation's key "
            "(etl-assets encrypt-password)"
        ) from None
