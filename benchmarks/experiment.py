"""The paper's experiment at small scale: does choosing the structure pay off?

One command runs everything (about 20 minutes on 2 cores, estimated from --quick)::

    python benchmarks/experiment.py            # full: 6 families x 3 ratios x 3 seeds, 2 tasks
    python benchmarks/experiment.py --quick    # 1 seed, ratio 4, 1 epoch (about 2 minutes)
    python benchmarks/experiment.py --smoke    # TT only, tiny fine-tuning set (seconds)
    python benchmarks/experiment.py --tasks classification --families SeKron TT --ratios 2 4

For each task (the digits CNN, the x2 super-resolution CNN), family (SeKron searched, GKPD, TT,
TR, CP, Tucker-2), compression ratio and seed: compress with ``sekron.torch.compress`` at the
ratio (counted over the compressed layers' weights), measure the task metric, fine-tune with the
same schedule for every family, and measure it again. Writes ``benchmarks/results/experiment``
``.json``, ``.md`` and ``.png`` (``experiment_quick.*``/``experiment_smoke.*`` for those modes).
Progress goes to stderr; Ctrl-C stops cleanly and writes the rows finished so far.
The harness lives in ``benchmarks/experiment/``; see ``docs/does_choosing_pay_off.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from experiment.cli import main  # noqa: E402  (the package next to this file)

if __name__ == "__main__":
    raise SystemExit(main())
