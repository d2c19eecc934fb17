"""Opening files named by a caller: regular files only, refused before a byte is read.

A path can name a FIFO (opening it for reading waits for a writer forever), a
terminal, a socket or a device such as /dev/zero (endless bytes). None of them
is a bundle, a key or an input image, so they are refused up front: the file is
opened non-blocking (opening a FIFO then returns at once) and checked with
fstat, on the descriptor that is then read -- no window between check and use.
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import BinaryIO, Iterator

from .errors import EdgeGuardError, InvalidArgumentError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def file_kind(mode: int) -> str:
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def path_text(path) -> str:
    """The path as text; a path with a NUL byte is an argument error (the OS cannot name it)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise InvalidArgumentError(f"expected a path, got {type(path).__name__}")
    text = os.fsdecode(os.fspath(path))
    if "\x00" in text:
        raise InvalidArgumentError(f"path {text!r} contains a NUL byte")
    return text


@contextlib.contextmanager
def open_regular_file(path, what: str, error: type[EdgeGuardError]) -> Iterator[tuple[BinaryIO, int]]:
    """Open `path` for binary reading; yields (file, size). Anything but a regular file,
    and any OSError, is raised as `error` ("cannot read <what> <path>: <reason>")."""
    text = path_text(path)
    try:
        fd = os.open(text, _OPEN_FLAGS)
    except OSError as e:
        raise error(f"cannot read {what} {text!r}: {e.strerror or e}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"cannot read {what} {text!r}: it is {file_kind(st.st_mode)}, not a regular file")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f, st.st_size
