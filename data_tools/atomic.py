"""Write files and folders under a temporary name, then rename: nothing is ever half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

TMP_MARK = ".tmp-"


def listed(path: Path) -> bool:
    """Not a temporary name of this project's writers, nor hidden: hidden files and folders
    are other tools' (Jupyter's .ipynb_checkpoints, macOS's ._<name> beside each file on a
    shared drive)."""
    return TMP_MARK not in path.name and not path.name.startswith(".")


def tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yields a temporary sibling of `path` to write (a file or a folder); renames it on success.

    On an exception the temporary is removed and `path` is left as it was.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise OSError(f"{path}: parent folder does not exist")
    tmp = tmp_sibling(path)
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path}: already exists")
            old = tmp_sibling(path)
            os.replace(path, old)  # a folder cannot be replaced in one rename
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def writable_dir(path: str | Path) -> Path:
    """`path` as an existing folder this process can write (made if missing), else an
    OSError that names it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"{path}: cannot create output folder ({exc.strerror or exc})") from exc
    if not path.is_dir():
        raise OSError(f"{path}: output path is not a folder")
    probe = tmp_sibling(path / ".write-probe")
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OSError(f"{path}: output folder is not writable ({exc.strerror or exc})") from exc
    return path
