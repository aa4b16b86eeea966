"""One fingerprint: the SHA-256 of a JSON description of what makes a file or a folder (a recipe and the options
that change its pictures, a dataset pair and its sampling settings, a PIE-Bench entry, an inversion-cache entry).
`--resume` and the inversion cache compare it with the one a record holds."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def fingerprint(what: dict[str, Any]) -> str:
    """Hex SHA-256 of `what` as canonical JSON (sorted keys; values JSON cannot hold are written as str())."""
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
