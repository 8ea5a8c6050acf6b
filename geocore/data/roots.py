"""Path confinement: the server folders an operator shares, and names that cannot leave a folder.

A shared app must show nothing of the server beyond what its operator chose to share. The operator lists
the shared folders in ``GEOCORE_DATA_DIRS`` (separated by ``os.pathsep``: ``:`` on Linux/macOS, ``;`` on
Windows); unset or empty, no server folder is shared (uploads only).

- :meth:`DataRoots.confine` takes a path a user typed (absolute, relative to the first shared folder, with
  ``~``, ``..`` or symlinks in it), resolves it fully and returns the real path when it lies inside a shared
  folder; otherwise an :class:`~geocore.errors.InputError` in one line. The refusal names only what the user
  typed, never where a link led, and is the same whether the path exists or not (no probing the server).
- :func:`resolve_inside` joins a name from a file (an ``IMG_ID`` of a results file) to a folder and refuses any
  that would leave it: an absolute path, a drive or UNC path, a ``..`` part, a NUL byte, a symlink leading out.
  Backslashes count as separators, so ``..\\..\\x`` is refused as ``../../x`` and ``sub\\a.jpg`` still works.

- :func:`open_inside` / :func:`read_inside` (and :meth:`DataRoots.open_file` / :meth:`DataRoots.read_bytes`)
  open first and check afterwards: the file is opened, then the real path of what was opened is read through
  its descriptor (``/proc/self/fd`` on Linux, ``F_GETPATH`` on macOS; elsewhere the descriptor's device and
  inode must match the resolved path's) and must lie inside a folder, be a regular file and be no larger than
  the reader's limit (``fstat``, before a byte is read). The bytes come from that descriptor, so a file or
  folder swapped for a link after :meth:`DataRoots.confine` / :func:`resolve_inside` checked the path cannot
  make the app read outside the shared folders.

`confine` and `resolve_inside` return resolved (real) paths, which give messages and listings; what is read goes
through `open_inside`.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO, Literal

from geocore.errors import InputError

DATA_DIRS_ENV = "GEOCORE_DATA_DIRS"
Kind = Literal["dir", "file"] | None
_ENABLE = f"the operator shares folders with {DATA_DIRS_ENV}"


def _real(path: str | os.PathLike) -> Path:
    """The fully resolved path: `..` folded and every symlink followed (existing or not)."""
    return Path(os.path.realpath(os.fspath(path)))


def _norm(path: Path) -> str:
    return os.path.normcase(str(path))


def _inside(path: Path, root: Path) -> bool:
    """`path` is `root` or below it (both already resolved)."""
    p, r = _norm(path), _norm(root)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def _check_kind(real: Path, kind: Kind, shown: str) -> None:
    if kind == "dir" and not real.is_dir():
        raise InputError(f"no folder {shown} in the shared folders")
    if kind == "file" and not real.is_file():
        raise InputError(f"no file {shown} in the shared folders" if not real.is_dir()
                         else f"{shown} is a folder (expected a file)")


def _shown(text: str) -> str:
    """A user's text for a one-line message: quoted, control characters escaped, not too long."""
    text = repr(text)
    return text if len(text) <= 120 else text[:117] + "…'"


@dataclass(frozen=True)
class DataRoots:
    """The folders this server shares (resolved, existing), and the configured entries that were ignored."""

    roots: tuple[Path, ...] = ()
    ignored: tuple[str, ...] = ()  # entries of the setting that are not existing folders

    @classmethod
    def of(cls, folders: Iterable[str | os.PathLike]) -> DataRoots:
        """Shared folders from a list: each expanded (`~`) and resolved; empty entries skipped, entries that
        are not existing folders kept in `ignored`, duplicates dropped."""
        roots: list[Path] = []
        ignored: list[str] = []
        for entry in folders:
            text = os.fspath(entry).strip()
            if not text:
                continue
            if "\x00" in text:
                ignored.append(text.replace("\x00", "\\0"))
                continue
            real = _real(os.path.expanduser(text))
            if not real.is_dir():
                ignored.append(text)
            elif all(_norm(real) != _norm(r) for r in roots):
                roots.append(real)
        return cls(tuple(roots), tuple(ignored))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DataRoots:
        """The shared folders named by ``GEOCORE_DATA_DIRS`` (``os.pathsep``-separated); none when it is unset."""
        value = (os.environ if environ is None else environ).get(DATA_DIRS_ENV, "")
        return cls.of(value.split(os.pathsep))

    @property
    def enabled(self) -> bool:
        """Whether any server folder is shared."""
        return bool(self.roots)

    def describe(self) -> str:
        """The shared folders in words (for notices)."""
        return ", ".join(str(r) for r in self.roots) if self.roots else "none"

    def root_of(self, path: str | os.PathLike) -> Path | None:
        """The shared folder holding `path` once resolved (the first one), or None."""
        real = _real(path)
        return next((r for r in self.roots if _inside(real, r)), None)

    def open_file(self, path: str | os.PathLike, *, max_bytes: int,
                  name: str | None = None) -> contextlib.AbstractContextManager[BinaryIO]:
        """`open_inside` over the shared folders: the opened file checked to lie inside one of them."""
        return open_inside(path, self.roots, max_bytes=max_bytes, name=name)

    def read_bytes(self, path: str | os.PathLike, *, max_bytes: int, name: str | None = None) -> bytes:
        """`read_inside` over the shared folders: the bytes of a file that, once opened, lies inside them."""
        return read_inside(path, self.roots, max_bytes=max_bytes, name=name)

    def confine(self, path: str | os.PathLike, *, kind: Kind = None) -> Path:
        """`path` resolved (``~``, ``..``, symlinks; a relative path is taken from the first shared folder) when it
        lies inside a shared folder; `kind` "dir" / "file" also requires a folder / a regular file there.

        Raises InputError (one line) for an empty path, a NUL byte, no shared folders, a path outside them
        (the same message whether it exists or not) and, once inside, the wrong kind or a missing path.
        """
        text = os.fspath(path)
        shown = _shown(text)
        if not text.strip():
            raise InputError("no path given (expected a folder inside the shared folders)")
        if "\x00" in text:
            raise InputError(f"{shown} holds a NUL byte (not a path)")
        if not self.roots:
            raise InputError(f"{shown} cannot be opened: this server shares no folders ({_ENABLE})")
        expanded = Path(os.path.expanduser(text))
        real = _real(expanded if expanded.is_absolute() else self.roots[0] / expanded)
        if self.root_of(real) is None:
            raise InputError(f"{shown} is outside the folders this server shares ({self.describe()})")
        _check_kind(real, kind, shown)
        return real


def resolve_inside(root: str | os.PathLike, relative: str, *, kind: Kind = None) -> Path:
    """`root / relative`, resolved, when it stays inside `root` (itself resolved first: a root that is a symlink
    is its target). `relative` is a name from a file, e.g. an IMG_ID: refused when absolute (``/x``, ``C:\\x``,
    ``\\\\server\\share``), with a ``..`` part or a NUL byte, empty, or leading out through a symlink.
    Backslashes count as separators. `kind` "file" / "dir" also requires an existing file / folder.
    Raises InputError in one line.
    """
    if not isinstance(relative, str):
        raise InputError(f"{_shown(str(relative))} is a {type(relative).__name__} (expected a file name)")
    shown = _shown(relative)
    if "\x00" in relative:
        raise InputError(f"{shown} holds a NUL byte (not a file name)")
    posix = relative.replace("\\", "/")
    if PureWindowsPath(relative).drive or posix.startswith("/"):
        raise InputError(f"{shown} is an absolute path (expected a name inside the folder)")
    parts = PurePosixPath(posix).parts
    if ".." in parts:
        raise InputError(f"{shown} steps out with '..' (expected a name inside the folder)")
    base = _real(root)
    if not parts:
        if kind == "file":
            raise InputError(f"{shown} names the folder itself (expected a file inside it)")
        return base
    real = _real(base.joinpath(*parts))
    if not _inside(real, base):
        raise InputError(f"{shown} leads outside the folder through a link")
    if kind == "file" and not real.is_file():
        raise InputError(f"{shown} is not a file in the folder")
    if kind == "dir" and not real.is_dir():
        raise InputError(f"{shown} is not a folder inside the folder")
    return real


_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)  # a FIFO must not block
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def _opened_path(fd: int) -> Path | None:
    """The real path of the file open on `fd`, as the kernel knows it; None where the system cannot say."""
    with contextlib.suppress(OSError):
        if sys.platform.startswith("linux"):
            return Path(os.readlink(f"/proc/self/fd/{fd}"))
        if sys.platform == "darwin":
            import fcntl

            return Path(os.fsdecode(fcntl.fcntl(fd, fcntl.F_GETPATH, b"\0" * 1024).rstrip(b"\0")))
    return None


def _opened_inside(fd: int, path: str | os.PathLike, roots: tuple[Path, ...]) -> bool:
    """Whether the file open on `fd` (opened from `path`) lies inside one of `roots`."""
    real = _opened_path(fd)
    if real is not None:
        return any(_inside(real, r) for r in roots)
    # No way to ask the descriptor (e.g. Windows): the resolved path must lie inside and be the same file.
    resolved = _real(path)
    if not any(_inside(resolved, r) for r in roots):
        return False
    try:
        now, opened = os.stat(resolved), os.fstat(fd)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


@contextlib.contextmanager
def open_inside(path: str | os.PathLike, roots: Iterable[str | os.PathLike], *, max_bytes: int,
                name: str | None = None) -> Iterator[BinaryIO]:
    """`path` opened for reading when the opened file lies inside one of `roots` (resolved), is a regular file
    and holds at most `max_bytes`: checked on the descriptor, after the open, so no link swapped in after an
    earlier check can lead out. Raises InputError in one line naming `name` (default: the path), the same
    whether the path led out, is missing or cannot be read (no probing the server)."""
    text = os.fspath(path)
    shown = _shown(text if name is None else name)
    real_roots = tuple(_real(r) for r in roots)
    try:
        fd = os.open(text, _OPEN_FLAGS)
    except (OSError, ValueError):  # missing, unreadable, a NUL byte
        raise InputError(f"{shown} cannot be opened in the shared folders") from None
    try:
        if not _opened_inside(fd, text, real_roots):
            raise InputError(f"{shown} cannot be opened in the shared folders")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{shown} is not a regular file")
        if info.st_size > max_bytes:
            raise InputError(f"{shown} holds {info.st_size:,} bytes, over the {max_bytes:,} allowed")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        yield file


def read_inside(path: str | os.PathLike, roots: Iterable[str | os.PathLike], *, max_bytes: int,
                name: str | None = None) -> bytes:
    """The bytes of `path` read through `open_inside` (at most `max_bytes`, also when the file grows while read)."""
    shown = _shown(os.fspath(path) if name is None else name)
    with open_inside(path, roots, max_bytes=max_bytes, name=name) as file:
        try:
            data = file.read(max_bytes + 1)
        except OSError as err:
            raise InputError(f"{shown} cannot be read ({err.strerror or err})") from None
    if len(data) > max_bytes:
        raise InputError(f"{shown} holds more than the {max_bytes:,} bytes allowed")
    return data
