"""``python -m medhash.cli``: the ``medhash`` command."""
import sys

from .main import main

sys.exit(main())
