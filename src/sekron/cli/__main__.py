"""``python -m sekron.cli``: the ``sekron`` command."""

import sys

from ._main import main

sys.exit(main())
