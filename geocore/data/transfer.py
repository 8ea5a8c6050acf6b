"""Getting one file of a dataset: from a local folder, or over HTTP(S) with resume.

- :func:`probe` asks whether a file exists and how large it is (HEAD, redirects followed as HEAD; a local
  ``stat``) before anything is downloaded, so a file missing from a mirror is named before a byte is spent.
- :func:`download` writes ``<dest>.part`` and renames it to `dest` when whole. A ``.part`` left by an
  interrupted run is continued with an HTTP ``Range`` request; a server that ignores ranges sends the file again.
- Every network failure is one :class:`~geocore.errors.InputError` line: the host that cannot be reached
  (offline, refused, no such host, timed out), the file a mirror lacks (HTTP 404), other HTTP errors, or a
  transfer cut short ("run the same command again to resume").
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from geocore.data.text import readable
from geocore.errors import InputError

TIMEOUT_S = 20.0
_CHUNK = 1 << 20
Progress = Callable[[str, "int | None", int], AbstractContextManager[Callable[[int], None]]]


class MissingFile(InputError):
    """A file the source or mirror does not have (HTTP 404 / 410, no such local file)."""


@contextlib.contextmanager
def no_progress(label: str, total: int | None, done: int) -> Iterator[Callable[[int], None]]:
    """A progress reporter that shows nothing (the library's default; the CLI passes a progress bar)."""
    yield lambda n: None


@dataclass(frozen=True)
class Location:
    """Where one file is: a local path, or a URL. ``name`` is the file's catalog name (for messages)."""

    name: str
    url: str | None = None
    path: Path | None = None

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else str(self.url)


def locate_file(name: str, upstream_url: str, mirror: str | None) -> Location:
    """The :class:`Location` of catalog file `name`: upstream, or inside `mirror` (a local folder, or an
    http(s) URL prefix holding the same names)."""
    if not mirror:
        return Location(name, url=upstream_url)
    if urllib.parse.urlsplit(mirror).scheme in ("http", "https"):
        return Location(name, url=mirror.rstrip("/") + "/" + urllib.parse.quote(name))
    return Location(name, path=Path(os.path.expanduser(mirror)) / name)


class _KeepMethod(urllib.request.HTTPRedirectHandler):
    """Redirects keep the request's method (urllib turns a redirected HEAD into a GET, i.e. a whole download)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.method = req.get_method()
        return new


_OPENER = urllib.request.build_opener(_KeepMethod)


def _user_agent() -> str:
    try:
        from geocore import __version__
    except ImportError:  # pragma: no cover - the package always has one
        __version__ = "dev"
    return f"geocore/{__version__} (dataset fetch)"


def _request(url: str, method: str = "GET", headers: dict[str, str] | None = None):
    req = urllib.request.Request(url, method=method, headers={"User-Agent": _user_agent(), **(headers or {})})
    return _OPENER.open(req, timeout=TIMEOUT_S)


def _network_error(loc: Location, err: BaseException) -> InputError:
    """One line for a failed request: missing file, other HTTP status, or a host that cannot be reached."""
    if isinstance(err, urllib.error.HTTPError):
        if err.code in (404, 410):
            return MissingFile(f"{loc.name} is missing from {loc.url} (HTTP {err.code}); check the source or the "
                              "mirror (`geocore data list` shows where each file comes from)")
        return InputError(f"{loc.url} answered HTTP {err.code} ({readable(err.reason)}) for {loc.name}")
    host = urllib.parse.urlsplit(loc.url or "").netloc or "the server"
    reason = getattr(err, "reason", err)
    detail = readable(reason) or type(reason).__name__
    return InputError(f"cannot reach {host} for {loc.name} ({detail}): offline, or the server is down; try "
                      "again later, or use --from MIRROR")


_NET_ERRORS = (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException)


def probe(loc: Location) -> int | None:
    """The size of `loc` in bytes (None when the server does not say); InputError when it is missing or the
    host cannot be reached."""
    if loc.path is not None:
        if not loc.path.is_file():
            raise MissingFile(f"{loc.name} is missing from {loc.path.parent} (no such file); a mirror folder "
                             "holds the files under the names `geocore data list --json` shows")
        return loc.path.stat().st_size
    try:
        with _request(str(loc.url), "HEAD") as resp:
            length = resp.headers.get("Content-Length")
    except urllib.error.HTTPError as err:
        if err.code in (405, 501):  # HEAD not allowed: the size stays unknown, the GET will tell
            return None
        raise _network_error(loc, err) from None
    except _NET_ERRORS as err:
        raise _network_error(loc, err) from None
    return int(length) if length and length.isdigit() else None


def _content_range_start(value: str | None) -> int | None:
    """The first byte of a ``Content-Range: bytes A-B/N`` header."""
    if not value or not value.startswith("bytes "):
        return None
    start = value[6:].split("-", 1)[0].strip()
    return int(start) if start.isdigit() else None


def download(loc: Location, dest: Path, *, size: int | None = None, progress: Progress = no_progress) -> Path:
    """`loc` as a local file: a local mirror's own path, or `dest` once downloaded (resuming ``dest.part``)."""
    if loc.path is not None:
        return loc.path
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        resp = _request(str(loc.url), headers=headers)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have and size is not None and have == size:  # the .part is already whole
            os.replace(part, dest)
            return dest
        if err.code == 416:  # a stale .part: start again
            part.unlink(missing_ok=True)
            return download(loc, dest, size=size, progress=progress)
        raise _network_error(loc, err) from None
    except _NET_ERRORS as err:
        raise _network_error(loc, err) from None
    with resp:
        resumed = resp.status == 206 and _content_range_start(resp.headers.get("Content-Range")) == have
        if not resumed:
            have = 0  # the server sent the whole file: write it from the start
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else size
        try:
            with open(part, "ab" if resumed else "wb") as out, progress(loc.name, total, have) as advance:
                while block := resp.read(_CHUNK):
                    out.write(block)
                    advance(len(block))
        except (*_NET_ERRORS, OSError) as err:
            if not isinstance(err, _NET_ERRORS):  # the disk, not the network (full, read-only, no permission)
                raise InputError(f"cannot write {part} ({err.strerror}); the download is kept to resume") from None
            raise InputError(f"the download of {loc.name} was cut short ({readable(err) or type(err).__name__}); "
                             "run the same command again to resume it") from None
    got = part.stat().st_size
    if total is not None and got != total:
        raise InputError(f"the download of {loc.name} was cut short at {got:,} of {total:,} bytes; run the same "
                         "command again to resume it")
    os.replace(part, dest)
    return dest


def copy_local(source: Path, dest: Path) -> None:
    """Copy a local file into place through a temporary name (a kill leaves the old file or none)."""
    from geocore.data.safe_io import atomic_path

    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp, open(source, "rb") as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, _CHUNK)
