"""arkor-trio: a trio-native client for Arkor fine-tuning runs."""

from ._version import __version__ as __version__
