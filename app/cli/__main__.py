"""``python -m app.cli``: the ``amanuensis`` command without its entry-point script."""

import sys

from app.cli import main

sys.exit(main())
