"""Peer clients the benchmarks compare arkor-trio with (none of them is used by the library)."""
