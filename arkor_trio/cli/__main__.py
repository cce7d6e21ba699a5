"""``python -m arkor_trio.cli``: the same as the ``arkor-trio`` command."""

import sys

from ._main import main

sys.exit(main())
