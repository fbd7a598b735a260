"""File helpers: atomic replacement (write to a temporary sibling, then rename) and
content checksums.

A reader (or a later run) never sees a half-written file under a final name: either
the old file is there, or the complete new one. Used by every module that writes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from studio_sep.util.errors import OutputError


#: errno of a failed write that concerns the destination, whichever call raised it.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO})


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success make it durable and rename it onto ``path``.

    The parent folder is created. The temporary file is created with mode 0o666 less
    the umask (as ``open`` would create the final file); once the body is done it is
    fsynced, renamed, and the folder fsynced where the file system supports it, so a
    power cut leaves either the old file or the complete new one. On any exception the
    temporary file is removed and ``path`` is left as it was.

    Raises
    ------
    OutputError
        The folder or file cannot be written (disk full, read-only, no permission),
        naming ``path``, the cause and the fix.

    Parameters
    ----------
    path : path-like
        The final file name.
    suffix : str, optional
        Suffix of the temporary file (writers that infer the format from the name
        need it); defaults to the final file's suffix.
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_sibling(final, (final.suffix if suffix is None else suffix) + ".part")
    except OSError as exc:
        raise OutputError.from_os_error(exc, final) from exc
    try:
        try:
            yield tmp
        except OSError as exc:
            if exc.errno in _WRITE_ERRNOS:  # e.g. the disk filled while writing the body
                raise OutputError.from_os_error(exc, final) from exc
            raise
        try:
            _fsync(tmp)
            os.replace(tmp, final)
        except OSError as exc:
            raise OutputError.from_os_error(exc, final) from exc
        _fsync_folder(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _create_sibling(final: Path, suffix: str) -> Path:
    """A new empty file ``.<name>.<random><suffix>`` beside ``final``, mode 0o666 less the umask."""
    for _ in range(100):
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(final))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a file system without directory fsync is left be."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
