"""Throw-away test PKI and credentials, generated per test run (no keys or passwords in the repo).
The PKI and token helpers live in paid_telemetry_ops.pki (the local stack's ``--scale`` uses them too)."""

from __future__ import annotations

from paid_telemetry_ops.pki import Pki, make_pki, secret_file

__all__ = ["Pki", "bcrypt_hash", "make_pki", "secret_file"]


def bcrypt_hash(password: str) -> str:
    """The bcrypt hash Prometheus' and Alertmanager's --web.config.file expect."""
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
