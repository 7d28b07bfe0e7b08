"""Content-hash ids: the same content always gets the same id, so re-imports are idempotent."""

from __future__ import annotations

import hashlib

_SEP = "\x1f"  # unit separator: cannot be confused with text joined by ordinary characters


def content_id(*parts: str) -> str:
    """A 24-hex-digit (96-bit) id from the parts, order-sensitive."""
    joined = _SEP.join(parts).encode("utf-8", "surrogateescape")
    return hashlib.blake2b(joined, digest_size=12).hexdigest()
