"""geocore.data.roots: the shared folders and names that cannot leave a folder, against each way out."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from geocore.data.roots import DATA_DIRS_ENV, DataRoots, read_inside, resolve_inside
from geocore.errors import InputError

RACE_SECONDS = float(os.environ.get("GEOCORE_RACE_SECONDS", "5"))  # the report's 20 s run sets it


@pytest.fixture
def tree(tmp_path):
    """shared/ (results/run.csv, images/a.jpg, images/sub/b.jpg, links in and out), outside/secret.txt."""
    shared = tmp_path / "shared"
    (shared / "results").mkdir(parents=True)
    (shared / "results" / "run.csv").write_text("IMG_ID,LAT,LON\n")
    images = shared / "images"
    (images / "sub").mkdir(parents=True)
    (images / "a.jpg").write_bytes(b"jpeg")
    (images / "sub" / "b.jpg").write_bytes(b"jpeg")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (shared / "out_dir").symlink_to(outside, target_is_directory=True)  # a folder link leading out
    (images / "out.jpg").symlink_to(outside / "secret.txt")  # a file link leading out
    (images / "in.jpg").symlink_to(images / "a.jpg")  # a link staying inside
    return tmp_path


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


def test_from_env_unset_or_empty_shares_nothing(tree):
    for env in ({}, {DATA_DIRS_ENV: ""}, {DATA_DIRS_ENV: os.pathsep}):
        roots = DataRoots.from_env(env)
        assert not roots.enabled and roots.roots == ()
        with pytest.raises(InputError) as err:
            roots.confine(tree / "shared")
        assert DATA_DIRS_ENV in _one_line(err)


def test_from_env_resolves_and_skips_what_is_not_a_folder(tree, monkeypatch):
    shared = tree / "shared"
    monkeypatch.setenv("HOME", str(tree))
    value = os.pathsep.join(["~/shared", str(shared / "results" / ".." / "images"), str(tree / "missing"),
                             str(shared / "results" / "run.csv"), str(shared), ""])
    monkeypatch.setenv(DATA_DIRS_ENV, value)
    roots = DataRoots.from_env()
    real = Path(os.path.realpath(shared))
    assert roots.roots == (real, real / "images")  # `~` expanded, `..` folded, the duplicate dropped
    assert roots.ignored == (str(tree / "missing"), str(shared / "results" / "run.csv"))


def test_confine_inside_and_equal_to_the_root(tree):
    shared = Path(os.path.realpath(tree / "shared"))
    roots = DataRoots.of([shared])
    assert roots.confine(shared) == shared  # the root itself
    assert roots.confine(str(shared) + os.sep) == shared
    assert roots.confine(shared / "results", kind="dir") == shared / "results"
    assert roots.confine("results", kind="dir") == shared / "results"  # relative: from the first root
    assert roots.confine(shared / "results" / "run.csv", kind="file") == shared / "results" / "run.csv"
    assert roots.confine(shared / "images" / ".." / "results") == shared / "results"  # `..` staying inside


def test_confine_refuses_every_way_out_with_the_same_message(tree, monkeypatch):
    shared = tree / "shared"
    roots = DataRoots.of([shared])
    monkeypatch.setenv("HOME", str(tree / "outside"))
    outside = [
        "/", "/etc", "/etc/passwd", "/nonexistent/folder",  # absolute, existing or not
        str(tree / "outside"), str(tree),  # a sibling, the parent
        str(shared / ".." / "outside"), "../outside", "results/../../outside",  # `..`
        str(shared / "out_dir"), "out_dir", str(shared / "out_dir" / "secret.txt"),  # a symlink out of the root
        "~", "~/secret.txt",  # `~` expanded first
        str(shared) + "-evil",  # a prefix of the root's name is not inside it
    ]
    for path in outside:
        with pytest.raises(InputError) as err:
            roots.confine(path)
        msg = _one_line(err)
        assert "outside the folders this server shares" in msg, (path, msg)
        assert str(tree / "outside") not in msg.replace(repr(path)[1:-1], "")  # never where a link led


def test_confine_refuses_nul_empty_and_wrong_kind(tree):
    shared = tree / "shared"
    roots = DataRoots.of([shared])
    for bad in ("", "   ", str(shared) + "\x00/etc"):
        with pytest.raises(InputError) as err:
            roots.confine(bad)
        _one_line(err)
    with pytest.raises(InputError, match="expected a file"):
        roots.confine(shared / "results", kind="file")  # a folder where a file is expected
    with pytest.raises(InputError, match="no folder"):
        roots.confine(shared / "results" / "run.csv", kind="dir")  # a file where a folder is expected
    with pytest.raises(InputError, match="no folder"):
        roots.confine(shared / "nothing_here", kind="dir")  # inside, missing


def test_a_root_that_is_itself_a_symlink(tree):
    link = tree / "link_to_shared"
    link.symlink_to(tree / "shared", target_is_directory=True)
    roots = DataRoots.of([link])
    real = Path(os.path.realpath(tree / "shared"))
    assert roots.roots == (real,)  # the link's target is the root
    assert roots.confine(link / "results", kind="dir") == real / "results"  # through the link
    assert roots.confine(real / "results", kind="dir") == real / "results"  # or by its real name
    with pytest.raises(InputError, match="outside"):
        roots.confine(link / "out_dir")  # a link out of it is still refused
    assert resolve_inside(link / "images", "a.jpg", kind="file") == real / "images" / "a.jpg"


def test_resolve_inside_names_from_a_file(tree):
    images = tree / "shared" / "images"
    real = Path(os.path.realpath(images))
    assert resolve_inside(images, "a.jpg", kind="file") == real / "a.jpg"
    assert resolve_inside(images, "sub/b.jpg", kind="file") == real / "sub" / "b.jpg"
    assert resolve_inside(images, "sub\\b.jpg", kind="file") == real / "sub" / "b.jpg"  # Windows separators
    assert resolve_inside(images, "./sub//b.jpg") == real / "sub" / "b.jpg"
    assert resolve_inside(images, "in.jpg", kind="file") == real / "a.jpg"  # a link staying inside
    assert resolve_inside(images, "missing.jpg") == real / "missing.jpg"  # no kind: existence not checked
    assert resolve_inside(images, "sub", kind="dir") == real / "sub"
    assert resolve_inside(images, "") == real and resolve_inside(images, ".") == real  # the folder itself


@pytest.mark.parametrize("img_id, why", [
    ("../../etc/passwd", "'..'"), ("../outside/secret.txt", "'..'"), ("sub/../../x", "'..'"), ("..", "'..'"),
    ("..\\..\\etc\\passwd", "'..'"), ("sub\\..\\..\\x", "'..'"),  # Windows-style separators
    ("/etc/passwd", "absolute"), ("//etc/passwd", "absolute"), ("\\etc\\passwd", "absolute"),
    ("C:\\Windows\\win.ini", "absolute"), ("c:/x.jpg", "absolute"), ("\\\\server\\share\\x.jpg", "absolute"),
    ("a.jpg\x00.png", "NUL"), ("\x00", "NUL"),
    ("out.jpg", "link"),  # a file symlink pointing out
])
def test_resolve_inside_refuses_each_way_out(tree, img_id, why):
    with pytest.raises(InputError) as err:
        resolve_inside(tree / "shared" / "images", img_id)
    msg = _one_line(err)
    assert why in msg, msg
    assert "secret" not in msg.replace(repr(img_id), "")  # never where a link led


def test_resolve_inside_refuses_a_link_folder_out_and_wrong_kinds(tree):
    shared = tree / "shared"
    with pytest.raises(InputError, match="link"):
        resolve_inside(shared, "out_dir/secret.txt")  # a folder symlink on the way out
    with pytest.raises(InputError, match="folder itself"):
        resolve_inside(shared / "images", ".", kind="file")  # the folder where a file is expected
    with pytest.raises(InputError, match="not a file"):
        resolve_inside(shared / "images", "sub", kind="file")  # a folder where a file is expected
    with pytest.raises(InputError, match="not a file"):
        resolve_inside(shared / "images", "missing.jpg", kind="file")
    with pytest.raises(InputError, match="not a folder"):
        resolve_inside(shared / "images", "a.jpg", kind="dir")
    with pytest.raises(InputError, match="expected a file name"):
        resolve_inside(shared / "images", 7)  # e.g. a numeric IMG_ID column


def test_read_inside_reads_files_inside_and_refuses_the_rest(tree):
    shared = tree / "shared"
    roots = DataRoots.of([shared])
    assert roots.read_bytes(shared / "images" / "a.jpg", max_bytes=100) == b"jpeg"
    assert roots.read_bytes(shared / "images" / "in.jpg", max_bytes=100) == b"jpeg"  # a link staying inside
    with roots.open_file(shared / "results" / "run.csv", max_bytes=100) as f:
        assert f.read() == b"IMG_ID,LAT,LON\n"
    refused = [shared / "images" / "out.jpg", shared / "out_dir" / "secret.txt", tree / "outside" / "secret.txt",
               shared / "images" / "missing.jpg", shared / "images", "a\x00b"]
    for path in refused:  # a link out, a folder link out, outside, missing, a folder, a NUL byte
        with pytest.raises(InputError) as err:
            roots.read_bytes(path, max_bytes=100)
        assert "secret" not in _one_line(err) or "secret.txt" in str(path)
    os.mkfifo(shared / "images" / "fifo.jpg")  # would block a plain open
    with pytest.raises(InputError, match="not a regular file"):
        roots.read_bytes(shared / "images" / "fifo.jpg", max_bytes=100)


def test_read_inside_checks_the_size_before_reading(tree):
    big = tree / "shared" / "images" / "big.jpg"
    big.write_bytes(b"x" * 1001)
    with pytest.raises(InputError, match="1,001 bytes, over the 1,000 allowed") as err:
        read_inside(big, [tree / "shared"], max_bytes=1000, name="big.jpg")
    assert str(tree) not in _one_line(err)  # named as the caller says
    assert read_inside(big, [tree / "shared"], max_bytes=1001) == b"x" * 1001


def _flip(spot: Path, outside: Path, stop: threading.Event) -> None:
    """Until `stop`: `spot` (a real folder holding a.csv = b"public") swapped for a link to `outside` (whose
    a.csv = b"private") and back, as someone with write access to a shared folder could."""
    stash, tmp = spot.with_name(spot.name + ".real"), spot.with_name(spot.name + ".tmp")
    while not stop.is_set():
        os.rename(spot, stash)
        tmp.symlink_to(outside, target_is_directory=True)
        os.replace(tmp, spot)
        os.unlink(spot)
        os.rename(stash, spot)


def _race(spot: Path, outside: Path, seconds: float, read) -> tuple[int, int, int]:
    """`read()` called for `seconds` while a thread flips `spot` (`_flip`): (outside reads, inside reads, refusals)."""
    stop = threading.Event()
    flipper = threading.Thread(target=_flip, args=(spot, outside, stop), daemon=True)
    flipper.start()
    leaked = good = refused = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                data = read()
            except (InputError, OSError):
                refused += 1
                continue
            leaked += data == b"private"
            good += data == b"public"
    finally:
        stop.set()
        flipper.join()
    return leaked, good, refused


@pytest.fixture
def race_tree(tmp_path) -> tuple[DataRoots, Path, Path]:
    """(roots sharing shared/, shared/in (a real folder: a.csv = public), outside/ (a.csv = private))."""
    shared, outside = tmp_path / "shared", tmp_path / "outside"
    (shared / "in").mkdir(parents=True)
    outside.mkdir()
    (shared / "in" / "a.csv").write_bytes(b"public")
    (outside / "a.csv").write_bytes(b"private")
    return DataRoots.of([shared]), shared / "in", outside


def test_a_folder_swapped_for_a_link_after_the_check_is_never_read_outside(race_tree):
    """Item 7: the Failures page's flow (confine, then read the checked path) while a thread swaps the checked
    folder for a link out and back: never the outside bytes."""
    roots, spot, outside = race_tree

    def checked_then_read() -> bytes:
        path = roots.confine(spot / "a.csv", kind="file")  # checked now...
        return roots.read_bytes(path, max_bytes=100)  # ...read a moment later, when the folder may be a link

    leaked, good, refused = _race(spot, outside, RACE_SECONDS, checked_then_read)
    assert leaked == 0, f"read the outside file {leaked} times ({good} good reads, {refused} refusals)"
    assert good > 0 and refused > 0  # the race really ran both ways


def test_reading_through_the_flipping_link_itself_is_never_outside(race_tree):
    roots, spot, outside = race_tree
    leaked, good, _ = _race(spot, outside, min(RACE_SECONDS, 2.0),
                            lambda: roots.read_bytes(spot / "a.csv", max_bytes=100))
    assert leaked == 0 and good > 0


def test_the_old_check_then_open_leaks(race_tree):
    """The race above is real: a plain open of the checked path reads the outside file."""
    roots, spot, outside = race_tree
    leaked, _, _ = _race(spot, outside, 2.0, lambda: roots.confine(spot / "a.csv", kind="file").read_bytes())
    assert leaked > 0
