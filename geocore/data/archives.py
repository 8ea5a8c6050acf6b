"""Unpacking downloaded archives (zip, tar in any compression, a tar cut into pieces) member by member, safely.

- **Names are checked before anything is written.** A member whose name is absolute (``/x``, ``C:\\x``), holds a
  ``..`` part or a NUL byte, or that is a link or a device, refuses the whole archive (InputError naming the
  member): a zip is checked whole first (its central directory lists every member); a tar stream is checked
  member by member and the caller removes what was unpacked (it unpacks into a temporary folder).
- **Flattening.** With ``flatten`` each image lands in the target folder under its base name (the benchmark tables
  name images by base name; the archives' inner folders differ by source) and other members (read-me files,
  ``Thumbs.db``) are left out and counted. Two images with the same base name refuse the archive.
- **Corrupt members.** A zip member whose bytes fail their CRC or do not decompress is named, then skipped
  (``on_corrupt="skip"``) or refuses the archive (``"refuse"``). A damaged tar stream cannot be read past, so it
  always refuses, naming the member where it broke.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from geocore.data.roots import resolve_inside
from geocore.data.text import readable
from geocore.errors import InputError

OnCorrupt = str  # "skip" | "refuse"
ON_CORRUPT = ("skip", "refuse")
_CHUNK = 1 << 20
_IGNORED_TOP = {"__MACOSX"}  # resource forks macOS adds to zips: never images
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".tif", ".tiff", ".gif", ".bmp"}


@dataclass
class ExtractReport:
    """What unpacking did: files written, and the corrupt members skipped (``archive: member (why)``)."""

    files: int = 0
    skipped: list[str] = field(default_factory=list)
    other: int = 0  # members that are not images, left out when flattening


def _shown(name: str) -> str:
    return repr(readable(name))[:160]


def _wanted(path: PurePosixPath, flatten: bool, report: ExtractReport) -> bool:
    if flatten and path.suffix.lower() not in IMAGE_SUFFIXES:
        report.other += 1
        return False
    return True


def check_member_name(archive: str, name: str) -> PurePosixPath | None:
    """The member's path when it is safe to unpack, None when it is to be ignored (``__MACOSX/``); InputError for
    an absolute path, a ``..`` part or a NUL byte."""
    why = None
    posix = name.replace("\\", "/")
    if "\x00" in name:
        why = "holds a NUL byte"
    elif posix.startswith("/") or PureWindowsPath(name).drive:
        why = "is an absolute path"
    elif ".." in PurePosixPath(posix).parts:
        why = "steps out with '..'"
    if why:
        raise InputError(f"{archive}: member {_shown(name)} {why}; the archive is refused (a member must stay "
                         "inside the dataset folder) and nothing of it is kept")
    path = PurePosixPath(posix)
    if not path.parts or path.parts[0] in _IGNORED_TOP:
        return None
    return path


def _target(dest: Path, path: PurePosixPath, flatten: bool) -> Path:
    if flatten:
        return dest / path.name
    return resolve_inside(dest, str(path))


def _copy(source, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        shutil.copyfileobj(source, out, _CHUNK)


def _claim(target: Path, seen: dict[Path, str], archive: str, name: str) -> None:
    if target in seen or target.exists():
        first = seen.get(target, target.name)
        raise InputError(f"{archive}: members {_shown(first)} and {_shown(name)} both unpack to {target.name!r}; "
                         "the archive is refused")
    seen[target] = name


def _write_failure(err: BaseException, dest: Path) -> InputError | None:
    """An InputError when `err` is the disk refusing a write (full, read-only, no permission), not a bad archive."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
        return InputError(f"cannot write into {dest} ({err.strerror}); nothing of the dataset is marked complete")
    return None


def _zip_is_link(info: zipfile.ZipInfo) -> bool:
    """A member stored by a Unix zip as a symlink, device or FIFO (its file type in the high attribute bits)."""
    if info.create_system != 3:  # not made on Unix: those bits carry no file type
        return False
    return stat.S_IFMT(info.external_attr >> 16) not in (0, stat.S_IFREG, stat.S_IFDIR)


def extract_zip(path: Path, dest: Path, *, on_corrupt: OnCorrupt, flatten: bool, label: str | None = None,
                report: ExtractReport | None = None) -> ExtractReport:
    """Unpack zip `path` into `dest` (see the module docstring)."""
    label = label or path.name
    report = report if report is not None else ExtractReport()
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise InputError(f"{label}: not a readable zip archive ({readable(err)}); fetch it again") from None
    with zf:
        plan: list[tuple[zipfile.ZipInfo, Path]] = []
        seen: dict[Path, str] = {}
        for info in zf.infolist():  # every name checked before a byte is written
            member = check_member_name(label, info.filename)
            if member is None or info.is_dir() or not _wanted(member, flatten, report):
                continue
            if _zip_is_link(info):
                raise InputError(f"{label}: member {_shown(info.filename)} is a link or device, not a file; the "
                                 "archive is refused")
            target = _target(dest, member, flatten)
            _claim(target, seen, label, info.filename)
            plan.append((info, target))
        for info, target in plan:
            try:
                with zf.open(info) as src:
                    _copy(src, target)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as err:
                target.unlink(missing_ok=True)
                if (disk := _write_failure(err, dest)) is not None:
                    raise disk from None
                what = f"{label}: member {_shown(info.filename)} is corrupt ({readable(err)})"
                if on_corrupt != "skip":
                    raise InputError(f"{what}; nothing of the dataset is marked complete (use --on-corrupt skip to "
                                     "leave such members out)") from None
                report.skipped.append(what)
                continue
            report.files += 1
    return report


class _Concat(io.RawIOBase):
    """The pieces of a cut archive read as one stream, in order."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths = list(paths)
        self._fh = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self._fh is None:
                if not self._paths:
                    return 0
                self._fh = open(self._paths.pop(0), "rb")  # noqa: SIM115 - closed when exhausted or on close()
            n = self._fh.readinto(buffer)
            if n:
                return n
            self._fh.close()
            self._fh = None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        super().close()


def extract_tar(paths: Sequence[Path], dest: Path, *, flatten: bool, label: str | None = None,
                report: ExtractReport | None = None) -> ExtractReport:
    """Unpack the tar stream made of `paths` (one file, or the pieces of a cut one, in order; any compression)
    into `dest`. A damaged stream refuses, naming the member where it broke (see the module docstring)."""
    label = label or paths[0].name
    report = report if report is not None else ExtractReport()
    seen: dict[Path, str] = {}
    last = "(the start)"
    stream = io.BufferedReader(_Concat(paths), _CHUNK)
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tf:
            for member in tf:
                last = member.name
                path = check_member_name(label, member.name)
                if path is None or member.isdir():
                    continue
                if not member.isfile():
                    raise InputError(f"{label}: member {_shown(member.name)} is a link or device, not a file; the "
                                     "archive is refused")
                if not _wanted(path, flatten, report):
                    continue
                target = _target(dest, path, flatten)
                _claim(target, seen, label, member.name)
                source = tf.extractfile(member)
                if source is None:
                    continue
                try:
                    _copy(source, target)
                except BaseException:
                    target.unlink(missing_ok=True)
                    raise
                report.files += 1
    except (tarfile.TarError, zlib.error, EOFError, OSError) as err:
        if (disk := _write_failure(err, dest)) is not None:
            raise disk from None
        raise InputError(f"{label}: the archive is damaged at member {_shown(last)} ({readable(err)}); a damaged "
                         "tar stream cannot be read past, so nothing of it is kept: fetch it again") from None
    finally:
        stream.close()
    return report


def extract(paths: Sequence[Path], dest: Path, *, on_corrupt: OnCorrupt = "refuse", flatten: bool = True,
            label: str | None = None, report: ExtractReport | None = None,
            echo: Callable[[str], None] | None = None) -> ExtractReport:
    """Unpack one archive (zip or tar) or the pieces of a cut tar into `dest`, which must exist."""
    if on_corrupt not in ON_CORRUPT:
        raise InputError(f"--on-corrupt {on_corrupt!r}: expected one of {', '.join(ON_CORRUPT)}")
    dest.mkdir(parents=True, exist_ok=True)
    if len(paths) == 1 and zipfile.is_zipfile(paths[0]):
        report = extract_zip(paths[0], dest, on_corrupt=on_corrupt, flatten=flatten, label=label, report=report)
    else:
        report = extract_tar(paths, dest, flatten=flatten, label=label, report=report)
    if echo is not None:
        echo(f"unpacked {label or os.fspath(paths[0].name)}: {report.files:,} files so far")
    return report
