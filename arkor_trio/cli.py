"""The ``arkor-trio`` command line."""

from __future__ import annotations


def main() -> None:
    """Entry point of the ``arkor-trio`` console script."""
    print("arkor-trio: the command line is coming with the local backend")
