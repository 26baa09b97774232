"""Atomic writes: a file or a directory appears complete or not at all (written beside it, then renamed).

The one implementation for the whole package: the run folder (:class:`sparsejax.train.rundir.RunDir`), the exported
checkpoints (``checkpoints/hf.py``, ``checkpoints/gguf.py``), the report and the experiments' result files. It
imports nothing from sparsejax, so that every layer may use it (``checkpoints/`` sits below ``train/``).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def umask() -> int:
    """The process's file-creation mask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, mode: str, data, encoding: str | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; the file gets the user's usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str | None = None) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename (never half-written).
    ``encoding``: as :func:`open` (``None``: the locale's)."""
    _atomic_write(Path(path), "w", text, encoding)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    _atomic_write(Path(path), "wb", data)


def atomic_directory(path: str | os.PathLike, write) -> None:
    """Call ``write(tmpdir)`` then move the finished directory to ``path`` (replacing it), never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700; an exported model gets the user's usual permissions
    try:
        write(tmp)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
