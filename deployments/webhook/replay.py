"""Replay protection: each signed request is accepted once, restarts included.

The signature covers the timestamp, and timestamps outside the clock-skew window are refused,
so a request can only be replayed inside that window: the receiver records every accepted
signature (a SQLite table under ``stores/platform``, shared by the receiver's processes) and
refuses one it has seen (409). Records whose timestamp has left the window are pruned: the
timestamp check refuses those requests anyway.
"""

from __future__ import annotations

import time

from tagifai.claims import Claims
from tagifai.config import Settings


def signature_claims(settings: Settings) -> Claims:
    return Claims(
        settings.stores_dir / "platform" / "webhook-replay.db",
        "signatures",
        ("timestamp", "accepted_at"),
    )


def claim_signature(settings: Settings, signature: str, timestamp: str, window_s: int) -> bool:
    """Record an accepted signature; False if it was accepted before (a replay)."""
    claims = signature_claims(settings)
    now = time.time()
    claims.prune("timestamp", now - window_s)
    return claims.claim(signature, timestamp=int(timestamp), accepted_at=now)


def release_signature(settings: Settings, signature: str) -> None:
    """Forget a signature whose request was not carried out (the sender may retry it)."""
    signature_claims(settings).release(signature)
