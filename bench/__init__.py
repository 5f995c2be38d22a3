"""robustopt's bench: scripts that measure robustopt against the literature and other libraries.

Every script runs from the repository root as ``python bench/NAME.py`` or ``python -m bench.NAME``
and shares one harness (``bench/harness.py``: model loader, logger, publisher). Results go to
``bench/results/<question>/``. See bench/README.md.
"""
