"""The ``sekron`` command line: ``sekron compare [PATH] [--key NAME] ...``.

``sekron compare`` prints, for each compression ratio, the best relative error of the searched
SeKron structure and of TT, TR, CP, Tucker, Tucker-2 and GKPD at the same parameter budget.
With no PATH it runs on the embedded example, a (128, 64, 3, 3) conv weight of a small CNN
trained on scikit-learn's digits (:func:`sekron.data.example_weight`). Given a checkpoint
(``.npz``, a PyTorch ``.pt``/``.pth``/``.bin``/``.ckpt`` state dict or ``.safetensors``) with
several entries, it compares every conv weight, or those ``--key`` names or matches, and prints
a summary table.

Exit codes: 0 done; 2 bad input (a missing, special, corrupt, pickled or unsupported file, a
key that matches nothing, an output path that cannot be written or would overwrite an input),
reported as one ``sekron: error: ...`` line on stderr before any work; 130 on Ctrl-C, which stops
at once, prints what finished and writes it where asked, marked partial.

``--json OUT.json`` writes ``sekron_version``, ``input`` (absolute path, sha256, keys and the
command line), ``options``, ``partial``, ``layers`` (per tensor: key, shape, dtype, the families
fitted, the seconds of each fit, ``"sekron+gkpd"`` being one shared search, and each search's
certificate and effort) and ``rows``: every row of every layer, SeKron rows with ``certified``,
``bound`` and ``n_open``. ``--plot OUT.png`` draws one figure; for several layers, one file per
layer, ``OUT.<layer>.png``.
"""

from ._io import CLIError, load_tensor, load_tensors
from ._main import main

__all__ = ["CLIError", "load_tensor", "load_tensors", "main"]
