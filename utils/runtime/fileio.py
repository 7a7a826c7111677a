"""Atomic file output: everything is written to a temporary name beside the target, then renamed."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from ..errors import SSTNetError, no_space_error

_UMASK = os.umask(0)
os.umask(_UMASK)


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) or fail with a one-line error naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SSTNetError(f"cannot create folder {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK):
        raise SSTNetError(f"folder {path} is not writable")
    return path


Inputs = Iterable[tuple[str, "str | os.PathLike | None"]]


def check_not_input(path: str | os.PathLike, flag: str, inputs: Inputs) -> None:
    """An output never destroys or mixes with what the run reads: after resolving symlinks, ``path`` may not be,
    contain or sit inside any of ``inputs`` ((flag, path) pairs naming each input; None entries are skipped)."""
    output = Path(path).resolve()
    for input_flag, input_path in inputs:
        if input_path is None:
            continue
        source = Path(input_path).resolve()
        if output == source:
            relation = "is"
        elif source in output.parents:
            relation = "lies inside"
        elif output in source.parents:
            relation = "contains"
        else:
            continue
        raise SSTNetError(f"{flag} {path}: {relation} the input {input_flag} {input_path}; write the output elsewhere "
                          "(an output never replaces, or mixes with, what the run reads)")


def check_output(path: str | os.PathLike, flag: str, folder: bool = False, inputs: Inputs = ()) -> Path:
    """Check, before any work, that ``path`` can receive the output of ``flag``: a folder (``folder``) or a file
    whose folder exists or can be created, writable, not the other kind of thing already, and none of the run's
    ``inputs`` (see :func:`check_not_input`)."""
    path = Path(path)
    check_not_input(path, flag, inputs)
    if folder:
        if path.exists() and not path.is_dir():
            raise SSTNetError(f"{flag} {path}: is a file, expected a folder for the outputs")
        return ensure_dir(path)
    if path.is_dir():
        raise SSTNetError(f"{flag} {path}: is a folder, expected a file name")
    ensure_dir(path.parent if str(path.parent) else ".")
    if path.exists() and not os.access(path, os.W_OK):
        raise SSTNetError(f"{flag} {path}: exists and is not writable")
    return path


def check_dataset_folder(path: str | os.PathLike, flag: str, refusal: str,
                         own: Callable[[Path], bool] = lambda folder: False) -> bool:
    """A tool that writes a whole dataset folder writes only into a new or empty one, or one that ``own`` recognises
    as its own earlier output (True is returned then): never over other data. A file, or a folder holding anything
    else, is refused with ``refusal`` after the flag and path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SSTNetError(f"{flag} {path}: is a file, expected a folder for the dataset")
    if not path.is_dir() or not any(path.iterdir()):
        return False
    if own(path):
        return True
    raise SSTNetError(f"{flag} {path}: {refusal}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``path``.

    The temporary name keeps the target's suffix so libraries that pick a format from the
    extension (matplotlib, OpenCV) still work. On failure the temporary file is removed and
    the previous file at ``path``, if any, is untouched.
    """
    path = Path(path)
    ensure_dir(path.parent if str(path.parent) else ".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions of a new file
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        full = no_space_error(exc, path.parent)
        if full is not None:
            raise full from exc
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open()`` for writing whose result appears under ``path`` only once it is complete."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=indent)
        if indent is not None:
            handle.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
