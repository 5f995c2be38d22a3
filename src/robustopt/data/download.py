"""Finding, verifying and downloading a dataset's official files; the data root.

The root is the ``root`` argument, else ``$ROBUSTOPT_DATA``, else a user cache folder
(``pooch.os_cache("robustopt")``). A dataset's files lie in ``ROOT/<folder>/`` (its
:attr:`~robustopt.data.registry.DatasetInfo.folder`), else in one of its fallback folders.

Missing files are downloaded from the official source (then mirrors) with pooch,
with a progress bar. pooch writes into a temporary file beside the target and
moves it into place only once its checksum matches, so a failed or interrupted
download leaves no partial file; the error then lists the exact paths to fill by
hand. A dataset that comes as one archive (CIFAR) is unpacked into a temporary folder;
its members are checked, moved into place, and the downloaded archive is deleted.
Nothing else is written to disk.

Verification. Every file is checked against the checksum in the registry (size first,
then the full hash) before it is read. The result is remembered for the life of the
process, keyed by (path, size, mtime), so a second load does not re-hash 180 MB and a
replaced file is checked again. Only files whose hash is known are accepted: there is no
switch to skip the check.

Example:
    >>> fetch("mnist")                  # ROOT/mnist, with its four files verified
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from robustopt.data.registry import DatasetCorruptError, DatasetInfo, DatasetNotFoundError, FileInfo, corrupt, info

__all__ = ["ENV_VAR", "HASH_LIMIT", "default_root", "status", "search_folders", "locate", "fetch", "ensure_files"]

ENV_VAR = "ROBUSTOPT_DATA"
HASH_LIMIT = 64 * 2**20  # bytes: `data list` hashes a dataset's files up to this total (MNIST 11 MB, CIFAR-10 180 MB)


def default_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``root`` if given, else ``$ROBUSTOPT_DATA``, else the user cache folder.

    Args:
        root: explicit root folder, or None.

    Returns:
        The root as an absolute path (it may not exist yet).
    """
    if root is None:
        env = os.environ.get(ENV_VAR, "").strip()
        root = env if env else _user_cache()
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike) or None, got {type(root).__name__}.")
    return Path(root).expanduser().absolute()


def _user_cache() -> Path:
    """The per-user cache folder used when neither ``root`` nor ``$ROBUSTOPT_DATA`` is set."""
    import pooch  # imported lazily: it pulls in requests

    return Path(pooch.os_cache("robustopt"))


def status(name: str, root: str | os.PathLike[str] | None = None) -> str:
    """Whether a dataset's official files are on disk, for ``robustopt data list``.

    Every file's size is compared with the official one; the checksums too when the
    dataset's files add up to at most ``HASH_LIMIT`` bytes (hashing CIFAR-10's 180 MB is
    left to :func:`fetch` and :func:`load`).

    Args:
        name: dataset name.
        root: data root (default: ``$ROBUSTOPT_DATA``, else the user cache).

    Returns:
        "shipped" (inside the package); "present" (every file of both splits is there,
        with the official size and checksum); "present (not verified)" (every file is
        there with the official size, its checksum not computed); "damaged" (a file is
        not the official one: ``robustopt data fetch NAME`` names it); or "missing" (at
        least one file is absent).
    """
    ds = info(name)
    if ds.shipped:
        return "shipped"
    folder = locate(name, root)
    if folder is None:
        return "missing"
    paths = {f: folder / f.path for f in ds.files}
    hashed = sum(p.stat().st_size for p in paths.values()) <= HASH_LIMIT
    try:
        for f, path in paths.items():
            (_verify if hashed else _check_size)(ds, f, path)
    except DatasetCorruptError:
        return "damaged"
    return "present" if hashed else "present (not verified)"


def search_folders(name: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders where a dataset's files are looked for, in order: ``ROOT/<folder>``, then system folders.

    Args:
        name: dataset name.
        root: data root (default: ``$ROBUSTOPT_DATA``, else the user cache).

    Returns:
        The folders; empty for a shipped dataset.
    """
    return _folders(info(name), default_root(root))


def locate(name: str, root: str | os.PathLike[str] | None = None) -> Path | None:
    """The first of :func:`search_folders` that holds every file of the dataset, or None.

    Only checks that the files exist (no hashing; :func:`fetch` and :func:`load` verify them).
    """
    ds = info(name)
    return _find_folder(ds, ds.files, default_root(root))


def fetch(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Download what is missing of a dataset, verify every file, return its folder.

    Used by ``robustopt data fetch NAME``.

    Args:
        name: dataset name.
        root: data root (default: ``$ROBUSTOPT_DATA``, else the user cache).

    Returns:
        The folder that holds the dataset's files (``ROOT/<name>``, or the
        Debian folder for Fashion-MNIST, or the package's assets folder for
        "mnist-mini").

    Raises:
        DatasetNotFoundError: a download failed; the message lists the paths to fill by hand.
        DatasetCorruptError: a present file does not match its checksum.
    """
    ds = info(name)
    if ds.shipped:
        asset = resources.files("robustopt").joinpath(*ds.asset.split("/"))
        return Path(str(asset)).parent
    folder, _ = ensure_files(ds, ds.files, default_root(root), download=True)
    return folder


# --- verifying and downloading files ---------------------------------------------------

_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) that passed the hash check


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _check_size(ds: DatasetInfo, f: FileInfo, path: Path) -> None:
    """Check the size of ``path`` against the official size of ``f`` (and of its known repacks), when known."""
    accepted = [(f.size, f.sha256), *f.also_accept]
    size = path.stat().st_size
    if all(s is not None for s, _ in accepted) and size not in {s for s, _ in accepted}:
        raise corrupt(ds, path, f"it has {size} bytes, the official file has {f.size} (interrupted copy?)")


def _verify(ds: DatasetInfo, f: FileInfo, path: Path) -> None:
    """Check ``path`` against the known size and hash of ``f`` (once per process)."""
    key = _cache_key(path)
    if key in _VERIFIED:
        return
    _check_size(ds, f, path)
    if f.sha256 is not None:
        accepted = [(f.size, f.sha256), *f.also_accept]
        digest, alg, expected = _sha256(path), "sha256", f.sha256
        ok = digest in {h for _, h in accepted}
    else:  # only an md5 is published
        with open(path, "rb") as fh:
            digest, alg, expected = hashlib.md5(fh.read(), usedforsecurity=False).hexdigest(), "md5", f.md5
        ok = digest == expected
    if not ok:
        raise corrupt(ds, path, f"its {alg} is {digest}, the official file's is {expected}")
    _VERIFIED.add(key)


def _folders(ds: DatasetInfo, root: Path) -> list[Path]:
    """ROOT/<folder>, then the fallback folders; none for a shipped dataset."""
    return [] if ds.shipped else [root / ds.folder, *map(Path, ds.fallback_dirs)]


def _find_folder(ds: DatasetInfo, files: tuple[FileInfo, ...], root: Path) -> Path | None:
    """The first of ROOT/<folder> and the fallback folders that holds every file, or None."""
    for folder in _folders(ds, root):
        if all((folder / f.path).is_file() for f in files):
            return folder
    return None


def ensure_files(
    ds: DatasetInfo, files: tuple[FileInfo, ...], root: Path, download: bool
) -> tuple[Path, dict[FileInfo, Path]]:
    """Locate (downloading what is missing if allowed) and verify ``files`` of ``ds``.

    Args:
        ds: the dataset.
        files: the files wanted (one split's, or all).
        root: the data root.
        download: fetch missing files; with False they raise at once.

    Returns:
        The folder that holds them, and each file's path, in the order of ``files``.

    Raises:
        DatasetNotFoundError: files missing and not downloaded; the message says where to put them.
        DatasetCorruptError: a file is not the official one.
    """
    folder = _find_folder(ds, files, root)
    if folder is None:
        folder = root / ds.folder
        missing = [f for f in files if not (folder / f.path).is_file()]
        if not download:
            raise _not_found(ds, folder, missing, "Not downloaded because download=False.")
        _download(ds, folder, missing)
    paths = {f: folder / f.path for f in files}
    for f, p in paths.items():
        _verify(ds, f, p)
    return folder, paths


def _retrieve(f: FileInfo, dest: Path) -> list[str]:
    """Try each URL of ``f`` with pooch; return the error of each failed try (empty on success)."""
    import pooch

    existed = dest.exists()
    errors = []
    for url in f.urls:
        try:
            # pooch streams into a temporary file in dest's folder, checks the hash,
            # then moves it to dest; on any failure the temporary file is removed.
            pooch.retrieve(url, known_hash=f.known_hash, fname=dest.name, path=dest.parent, progressbar=True)
            return []
        except Exception as err:  # network, HTTP status, hash mismatch, permissions: try the next mirror
            errors.append(f"{url}: {type(err).__name__}: {err}")
    if not existed and dest.exists():  # belt and braces: never leave a file that failed
        dest.unlink()
    return errors


def _download(ds: DatasetInfo, folder: Path, missing: list[FileInfo]) -> None:
    """Download ``missing`` into ``folder``; raise DatasetNotFoundError listing what is still missing."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _not_found(ds, folder, missing, f"Cannot create {folder}: {err}.") from err
    try:
        if ds.archive is not None:
            _download_archive(ds, folder, missing)
            return
        for i, f in enumerate(missing):
            errors = _retrieve(f, folder / f.path)
            if errors:
                raise _not_found(ds, folder, missing[i:], "Download failed:\n    " + "\n    ".join(errors))
            _VERIFIED.add(_cache_key(folder / f.path))  # pooch checked the sha256
    except BaseException:
        for p in created:  # remove the folders made for this download if they stayed empty
            try:
                p.rmdir()
            except OSError:
                break
        raise


def _download_archive(ds: DatasetInfo, folder: Path, missing: list[FileInfo]) -> None:
    """Fetch the archive, unpack it into a temporary folder, move the verified members into place."""
    import pooch

    arch = ds.archive
    if arch is None:
        raise ValueError(f"{ds.name!r} has no archive to download.")
    arch_path = folder / arch.path
    had_archive = arch_path.is_file()  # placed by hand: use it, keep it
    tmp: Path | None = None
    try:
        errors = _retrieve(arch, arch_path)
        if errors:
            raise _not_found(ds, folder, missing, "Download failed:\n    " + "\n    ".join(errors))
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=folder))
        try:
            pooch.Untar(members=[f.path for f in missing], extract_dir=str(tmp))(str(arch_path), "download", None)
        except Exception as err:
            raise _not_found(ds, folder, missing, f"Unpacking {arch_path} failed: {err}.") from err
        for f in missing:
            src = tmp / f.path
            if not src.is_file():
                raise _not_found(ds, folder, missing, f"The archive {arch.path} does not contain {f.path}.")
            try:
                _verify(ds, f, src)
            except DatasetCorruptError as err:
                why = str(err).split(": ", 1)[1].split(". Delete")[0]
                raise _not_found(ds, folder, missing, f"The downloaded {arch.path} holds a {f.path} that is not "
                                 f"the official file ({why}); nothing was kept.") from None
        for f in missing:
            dest = folder / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / f.path, dest)
            _VERIFIED.add(_cache_key(dest))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if not had_archive:
            arch_path.unlink(missing_ok=True)


def _not_found(ds: DatasetInfo, folder: Path, missing: list[FileInfo], reason: str) -> DatasetNotFoundError:
    """The error for missing files: what is missing, why, and exactly where to put what."""
    lines = [f"Dataset {ds.name!r}: {len(missing)} file(s) missing under {folder}. {reason}"]
    if ds.archive is not None:
        lines.append(f"To install it by hand, download {ds.archive.urls[0]} (md5 {ds.archive.md5}) and unpack it "
                     f"in {folder} (tar xzf {ds.archive.path} -C {folder}), so that these files exist:")
        lines += [f"    {folder / f.path}" for f in missing]
    else:
        lines.append("To install it by hand, put the official files at exactly these paths:")
        lines += [f"    {folder / f.path}    <- {f.urls[0] if f.urls else '?'}  ({f.known_hash})" for f in missing]
    root = folder.parent if ds.folder else folder
    lines.append(f"Or use a data root that already holds them: pass root=... (CLI: --root) or set {ENV_VAR}=/path "
                 f"(current root: {root}; the files go in ROOT/{ds.folder}/).")
    if ds.fallback_dirs:
        lines.append(f"Also looked in: {', '.join(ds.fallback_dirs)} (Debian package dataset-{ds.name}).")
    lines.append(f"With internet access, `robustopt data fetch {ds.name}` downloads and verifies them.")
    return DatasetNotFoundError("\n".join(lines))
