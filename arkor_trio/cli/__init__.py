"""The ``arkor-trio`` command line (the top layer: it uses the trainer, the client and the server).

``main(argv)`` runs one command and returns its exit code; see docs/cli.md.
"""

from ._main import DEFAULT_DATA_DIR as DEFAULT_DATA_DIR
from ._main import build_parser as build_parser
from ._main import main as main

__all__ = ["DEFAULT_DATA_DIR", "build_parser", "main"]
