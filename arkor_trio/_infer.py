"""The infer helper bound to an adapter (filled in by the client layer)."""

from __future__ import annotations


class Infer:
    """Placeholder until the client layer lands."""
