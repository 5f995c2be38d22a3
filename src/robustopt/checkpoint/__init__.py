"""Safe checkpoints: safetensors weights + a JSON commit marker.

A checkpoint at ``runs/a/model`` is up to three files::

    runs/a/model.safetensors   weights (model.state_dict(), CPU, contiguous; the same
                               tensors give the same bytes, whatever their order)
    runs/a/model.optim.pt      optimizer state (optional; torch.save, loaded
                               with weights_only=True)
    runs/a/model.tensors.safetensors
                               extra named tensors (optional; e.g. a training
                               method's state), read with :func:`load_tensors`
    runs/a/model.json          metadata, written last: format marker, model
                               registry name + ModelConfig, training config,
                               extra (epoch, metrics...), torch version and the
                               sha256 of every payload file

Each file is written atomically (temp file, fsync, ``os.replace``). The JSON is
the commit marker: a checkpoint is what its JSON describes, and :func:`load`
refuses payload files whose sha256 does not match. While a save overwrites an
existing checkpoint, the previously committed payload files are kept as
hard-linked ``<file>.<sha16>.bak`` until the new JSON is in place, so a crash at
any point leaves the previous checkpoint loadable (:func:`load` falls back to
the backup that matches the committed JSON, with a warning).

The modules: ``files`` (the layout, the JSON commit marker, the backups of an overwritten
checkpoint, :func:`verify` and :func:`remove`) and ``store`` (:func:`save`, :func:`load`,
:func:`load_tensors`).

Nothing is unpickled from the weights file, and the optimizer file is read with
``weights_only=True``, so loading an untrusted checkpoint executes no code.

    import robustopt as ro
    ro.checkpoint.save("runs/a/model", model, config=cfg, extra={"epoch": 3})
    model, meta = ro.checkpoint.load("runs/a/model")       # rebuilt from the registry
    model, meta = ro.checkpoint.load("runs/a/model", model=MyNet())
"""

from robustopt.checkpoint.files import (FORMAT, VERSION, CheckpointPaths, checkpoint_paths, exists, read_metadata,
                                        remove, verify)
from robustopt.checkpoint.store import load, load_tensors, save
from robustopt.models.weights import load_weights  # also public here

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointPaths",
    "checkpoint_paths",
    "exists",
    "save",
    "load",
    "load_tensors",
    "read_metadata",
    "remove",
    "verify",
    "load_weights",
]
