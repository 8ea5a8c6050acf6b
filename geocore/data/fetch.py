"""`fetch_dataset`: a catalog dataset from its source (or a mirror) into the layout every command reads.

In order, for the parts asked (``metadata``, ``images``):

1. **Plan.** Every file is located (upstream, or ``mirror``: a local folder or an http(s) URL prefix with the same
   names) and probed; the pieces of a cut archive are found in order until the first one missing. A file missing
   from the source is named before anything is downloaded.
2. **Disk.** The bytes still to download plus the unpacked size are checked against the free space of the data
   dir (`shutil.disk_usage`); too little refuses before a byte is written.
3. **Marker.** The parts about to be fetched leave the completion marker first (:mod:`geocore.data.fetched`).
4. **Each file** is downloaded (resuming a ``.part``; a local mirror's file is read in place) and its SHA-256
   checked against the source's published one, else against the one recorded in ``checksums.json`` by the first
   download (recorded there when there is none yet). A mismatch refuses the file and removes the download.
5. **Metadata**: the table is converted (:mod:`geocore.data.convert`) and side files are copied beside it.
   **Images**: archives are unpacked member by member (:mod:`geocore.data.archives`) into a temporary folder
   beside the target; at least one image the table lists must be among them (else the archive's layout is not
   the catalog's); the folder is then renamed into place.
6. The marker is written last with the parts now complete; the downloads are removed then (unless kept), not
   before: a run that fails later resumes without downloading again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from geocore.data.archives import ExtractReport, extract
from geocore.data.catalog import DatasetEntry, PartName, RemoteFile
from geocore.data.convert import convert_table, table_ids
from geocore.data.fetched import DatasetDir, data_home
from geocore.data.safe_io import file_sha256
from geocore.data.transfer import Location, MissingFile, Progress, copy_local, download, locate_file, no_progress, probe
from geocore.errors import InputError

MAX_PIECES = 1000
DISK_MARGIN = 1.05  # 5 % over the estimate


@dataclass(frozen=True)
class PlannedFile:
    """One concrete file to get: its catalog row, its name (a piece's number filled in), where it is, its size."""

    file: RemoteFile
    name: str
    loc: Location
    size: int | None  # probed; None when the source does not say

    @property
    def expected_size(self) -> int:
        """Bytes for disk planning: the probed size, else the catalog's figure (per piece for cut archives)."""
        return self.size if self.size is not None else (self.file.size or 0)


@dataclass
class FetchResult:
    """What a fetch did: the dataset folder, the parts now complete, and notes for the user."""

    folder: Path
    parts: dict[str, dict]
    notes: list[str] = field(default_factory=list)


def plan_files(entry: DatasetEntry, part: PartName, mirror: str | None) -> list[PlannedFile]:
    """Locate and probe every file of `part` (see the module docstring, step 1)."""
    planned: list[PlannedFile] = []
    for f in entry.part_files(part):
        if f.role != "split":
            loc = locate_file(f.name, f.url, mirror)
            planned.append(PlannedFile(f, f.name, loc, probe(loc)))
            continue
        for i in range(MAX_PIECES):
            name = f.name.format(i)
            loc = locate_file(name, f.url.format(i), mirror)
            try:
                size = probe(loc)
            except MissingFile:
                if i == 0:
                    raise
                break
            planned.append(PlannedFile(f, name, loc, size))
    return planned


def _download_dest(where: DatasetDir, item: PlannedFile) -> Path:
    return where.downloads / item.name.replace("/", "__")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_disk(where: DatasetDir, plan: Sequence[PlannedFile]) -> int:
    """Refuse (InputError) when the data dir lacks room for the downloads still to make plus the unpacked data;
    returns the bytes needed."""
    need = 0
    for item in plan:
        size = item.expected_size
        if item.loc.path is None:  # downloaded: what is not here yet
            dest = _download_dest(where, item)
            part = dest.with_name(dest.name + ".part")
            have = dest.stat().st_size if dest.is_file() else part.stat().st_size if part.is_file() else 0
            need += max(size - have, 0)
        need += size  # unpacked (images compress little) or converted
    need = int(need * DISK_MARGIN)
    anchor = _existing_ancestor(where.root)
    free = shutil.disk_usage(anchor).free
    if need > free:
        raise InputError(f"fetching {where.name} needs about {_gb(need)} free in {anchor} (downloads and unpacked "
                         f"files), and {_gb(free)} is free: free some space or choose another --to")
    return need


def _gb(n: int) -> str:
    if n < 1e6:
        return f"{n / 1e3:,.0f} kB"
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def _verify(where: DatasetDir, sums: dict[str, str], item: PlannedFile, path: Path, downloaded: bool) -> None:
    """Check `path` against the published or recorded SHA-256; record it when there is none yet."""
    digest = file_sha256(path)
    if item.file.sha256:
        expected, origin = item.file.sha256.lower(), "published by the source"
    else:
        expected, origin = sums.get(item.name), f"recorded in {where.checksums} by its first download"
    if expected and digest != expected:
        if downloaded:
            path.unlink(missing_ok=True)
        raise InputError(f"{item.name}: SHA-256 {digest[:16]}… differs from {expected[:16]}… {origin}; the file is "
                         f"refused{' and its download removed' if downloaded else ''}: fetch again, or check the "
                         "mirror (if the source really changed it, delete that line of checksums.json)")
    if item.name not in sums:
        sums[item.name] = digest
        where.write_checksums(sums)


def _get(where: DatasetDir, sums: dict[str, str], item: PlannedFile, progress: Progress) -> tuple[Path, bool]:
    """The verified local copy of `item` and whether it is a download of ours (removable)."""
    path = download(item.loc, _download_dest(where, item), size=item.size, progress=progress)
    downloaded = item.loc.path is None
    _verify(where, sums, item, path, downloaded)
    return path, downloaded


def _fetch_metadata(entry: DatasetEntry, where: DatasetDir, plan: Sequence[PlannedFile], sums: dict[str, str],
                    progress: Progress, done: list[Path]) -> dict:
    info: dict = {"files": [p.name for p in plan]}
    for item in plan:
        path, downloaded = _get(where, sums, item, progress)
        if item.file.role == "table":
            report = convert_table(path, where.csv, entry.table, label=item.name)
            info.update(rows=report.rows, dropped=report.dropped)
        else:
            copy_local(path, where.folder / Path(item.name).name)
        if downloaded:
            done.append(path)
    return info


def _remove_stale_folders(folder: Path) -> None:
    """Remove the temporary image folders that killed fetches left behind (their process is gone)."""
    for stale in [*folder.glob(".images.tmp-*"), *folder.glob(".images.old-*")]:
        pid = stale.name.rsplit("-", 1)[-1]
        try:
            alive = pid.isdigit() and int(pid) != os.getpid() and (os.kill(int(pid), 0) is None)
        except ProcessLookupError:
            alive = False
        except OSError:  # exists, not ours to signal
            alive = True
        if not alive:
            shutil.rmtree(stale, ignore_errors=True)


def _fetch_images(where: DatasetDir, plan: Sequence[PlannedFile], sums: dict[str, str], progress: Progress,
                  on_corrupt: str, has_table: bool, done: list[Path]) -> dict:
    _remove_stale_folders(where.folder)
    tmp = where.folder / f".images.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    report = ExtractReport()
    try:
        archives = [p for p in plan if p.file.role == "archive"]
        pieces = [p for p in plan if p.file.role == "split"]
        for item in archives:  # downloads are kept until the part is whole: a failed run resumes without them
            path, downloaded = _get(where, sums, item, progress)
            extract([path], tmp, on_corrupt=on_corrupt, label=item.name, report=report)
            done.extend([path] if downloaded else [])
        if pieces:
            got = [_get(where, sums, item, progress) for item in pieces]
            extract([p for p, _ in got], tmp, on_corrupt=on_corrupt, label=f"{pieces[0].name}…{pieces[-1].name}",
                    report=report)
            done.extend(path for path, downloaded in got if downloaded)
        info: dict = {"files": [p.name for p in plan], "unpacked": report.files, "skipped": report.skipped}
        if has_table:
            ids = table_ids(where.csv)
            present = set(os.listdir(tmp))
            found = sum(1 for i in ids if i in present)
            if not found:
                sample = ", ".join(sorted(present)[:3]) or "no files"
                raise InputError(f"none of the {len(ids):,} images {where.csv.name} lists is among the {report.files:,} "
                                 f"unpacked files (e.g. {sample}): the archive's layout is not the catalog's; nothing "
                                 "of the images is marked complete")
            info.update(listed=len(ids), present=found)
        old = where.folder / f".images.old-{os.getpid()}"
        if where.images.exists():
            os.replace(where.images, old)
        os.replace(tmp, where.images)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def fetch_dataset(entry: DatasetEntry, *, root: str | os.PathLike | None = None,
                  parts: Sequence[PartName] | None = None, mirror: str | None = None, on_corrupt: str = "refuse",
                  keep_downloads: bool = False, progress: Progress = no_progress,
                  echo: Callable[[str], None] = lambda s: None) -> FetchResult:
    """Fetch `parts` (default: all the dataset has) of `entry` into the data dir `root` (see the module
    docstring); returns what is now complete. Every failure is one InputError line; a failed part is never
    left marked complete."""
    where = DatasetDir(data_home(root), entry.name)
    wanted = list(dict.fromkeys(parts or entry.parts))
    for part in wanted:
        if part not in entry.parts:
            raise InputError(f"{entry.name} has no {part} part to fetch ({entry.notes or 'see geocore data list'})")
    wanted.sort(key=("metadata", "images").index)  # the table first: the images are checked against it
    plans = {part: plan_files(entry, part, mirror) for part in wanted}
    need = check_disk(where, [p for plan in plans.values() for p in plan])
    echo(f"{entry.name}: {sum(len(p) for p in plans.values())} file(s), about {_gb(need)} needed in {where.root}")
    where.folder.mkdir(parents=True, exist_ok=True)
    previous = where.complete_parts()
    complete = {k: v for k, v in previous.items() if k not in wanted}
    where.write_marker(complete)  # the parts being replaced are not complete until they are whole again
    sums = where.read_checksums()
    result = FetchResult(where.folder, complete)
    finished: list[Path] = []
    for part in wanted:
        if part == "metadata":
            complete["metadata"] = _fetch_metadata(entry, where, plans[part], sums, progress, finished)
            if complete["metadata"].get("dropped"):
                result.notes.append(f"{where.csv.name}: rows left out: " + ", ".join(
                    f"{n:,} ({why})" for why, n in complete["metadata"]["dropped"].items()))
        else:
            has_table = "metadata" in complete and where.csv.is_file()
            complete["images"] = _fetch_images(where, plans[part], sums, progress, on_corrupt, has_table, finished)
            result.notes.extend(f"skipped: {s}" for s in complete["images"]["skipped"])
        where.write_marker(complete)
    if not keep_downloads:
        for path in finished:
            path.unlink(missing_ok=True)
        shutil.rmtree(where.downloads, ignore_errors=True)
    result.parts = complete
    return result
