"""Seeds that are the same on every machine: derived from any parts (seed, prompt id, layer, sample) by hashing."""

from __future__ import annotations

import hashlib


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (e.g. seed, prompt id, layer, sample), the same on every machine."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
