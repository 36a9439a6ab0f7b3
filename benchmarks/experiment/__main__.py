"""``python benchmarks/experiment`` runs the same as ``python benchmarks/experiment.py``."""

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiment.cli import main  # noqa: E402

raise SystemExit(main())
