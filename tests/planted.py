"""A pickled object that runs code when unpickled, to check that loaders refuse it (weights_only=True)."""

from __future__ import annotations

from pathlib import Path


class Planted:
    """Unpickling this writes ``marker``: a loader that executes pickles leaves the file behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))
