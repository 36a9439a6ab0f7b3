"""The compression experiment: compress, fine-tune and measure every family (issue #11).

Modules: ``harness`` (the procedure, public sekron API only), ``classification`` and
``super_resolution`` (the tasks), ``sr`` (the SR network, its data and metrics), ``report``
(JSON, Markdown, plot) and ``cli``. Entry point: ``python benchmarks/experiment.py``.
"""
