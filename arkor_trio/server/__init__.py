"""The local reference backend."""
