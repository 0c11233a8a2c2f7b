"""The account fingerprint: what tells two accounts of one provider apart, and is no secret.

A state store keys every row by provider and account, and a shared rate budget by account,
without ever holding a key: the fingerprint is a keyed BLAKE2b digest of the credential the
provider counts an account by (Dexatel's API key, Batch's project key).
"""

from __future__ import annotations

import hashlib

__all__ = ["account_fingerprint"]

#: The hash's key: fixed, so that a fingerprint is the same in every process and version.
_KEY = b"audiencekit account fingerprint v1"


def account_fingerprint(credential: str) -> str:
    """16 hex digits that stand for the account of ``credential``; the credential cannot be
    read back from them (64 bits of a keyed hash: enough to tell accounts apart)."""
    return hashlib.blake2b(credential.encode(), key=_KEY, digest_size=8).hexdigest()
