"""HMAC signing of a notice: the headers a sender attaches and the receiver's checks.

The sender sends ``X-Tagifai-Timestamp: <unix seconds>`` and
``X-Tagifai-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{raw body}")>``. The
timestamp is inside the MAC, so a captured request cannot be replayed with a fresh timestamp.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Tagifai-Timestamp"
SIGNATURE_HEADER = "X-Tagifai-Signature"
SIGNATURE_PREFIX = "sha256="


def compute_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 of ``{timestamp}.{body}`` under ``secret``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers a sender attaches to ``body``."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: compute_signature(secret, stamp, body)}


def signature_matches(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """True if ``signature`` is what ``secret`` gives ``body`` at ``timestamp`` (constant time)."""
    expected = compute_signature(secret, timestamp, body)
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


def timestamp_problem(timestamp: str, now: float, max_skew_s: int) -> str | None:
    """Why a timestamp header is refused (malformed, or too far from ``now``), or None."""
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return "malformed timestamp"
    if abs(now - int(timestamp)) > max_skew_s:
        return f"timestamp is more than {max_skew_s} s away from the server clock"
    return None
