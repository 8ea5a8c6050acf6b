"""Server folders in the app: only those the operator shares (``GEOCORE_DATA_DIRS``, `geocore.data.roots`).

Every server path a page accepts goes through `folder_input` (typed folders, the ``GEOCORE_RESULTS_DIR`` /
``GEOCORE_IMAGES_DIR`` pre-fills) and `files_in` / `shared_file` (what a folder lists, what is opened); names
from a results file (IMG_IDs) go through `geocore.data.roots.resolve_inside`. Resolved, confined, refused in one
line. With no shared folders the pages take uploads only and say how to share folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from geocore.data.roots import DATA_DIRS_ENV, DataRoots, resolve_inside
from geocore.errors import InputError

from ui.page import show_error

NOT_SHARED = (f"This server shares no folders, so results files can only be uploaded. To open files on the "
              f"server, its operator lists the folders to share in `{DATA_DIRS_ENV}` (separated by "
              f"`{os.pathsep}`) before starting the app; see “Running a shared server” in app/README.md.")


def data_roots() -> DataRoots:
    """The folders this server shares, read from the environment on every run (cheap: a few `realpath`s)."""
    return DataRoots.from_env()


def folder_input(label: str, *, key: str, env: str | None = None, placeholder: str = "",
                 default_first_root: bool = True) -> Path | None:
    """A folder box confined to the shared folders. Pre-filled from `env` (when set) or the first shared folder;
    returns the resolved folder, or None after a one-line notice (refused, missing) or when left empty."""
    roots = data_roots()
    default = os.environ.get(env, "") if env else ""
    if not default and default_first_root and roots.enabled:
        default = str(roots.roots[0])
    folder = st.text_input(label, value=default, key=key, placeholder=placeholder,
                           help=f"A folder inside the folders this server shares: {roots.describe()}. "
                                "A relative path starts from the first of them.")
    if not folder.strip():
        return None
    try:
        return roots.confine(folder.strip(), kind="dir")
    except InputError as err:
        show_error(err)
        return None


def files_in(folder: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Names of the regular files in `folder` (resolved, shared) with these suffixes whose real path stays in the
    shared folders: a link leading out is not listed."""
    roots = data_roots()
    names = []
    for p in folder.iterdir():
        if p.suffix.lower() in suffixes and p.is_file() and roots.root_of(p) is not None:
            names.append(p.name)
    return sorted(names)


def shared_file(folder: Path, name: str) -> Path:
    """`folder / name` (a name `files_in` listed), resolved and checked again when it is opened."""
    return data_roots().confine(resolve_inside(folder, name), kind="file")



def folders_holding(folder: Path, marker: str) -> list[str]:
    """"." when `folder` (resolved, shared) itself holds the file `marker`, then the names of its subfolders that
    do, whose real path stays in the shared folders: a link leading out is not listed."""
    roots = data_roots()
    names = ["."] if (folder / marker).is_file() else []
    try:
        subfolders = sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return names
    return names + [p.name for p in subfolders if (p / marker).is_file() and roots.root_of(p) is not None]


def shared_folder(folder: Path, name: str) -> Path:
    """`folder / name` (a name `folders_holding` listed; "." is `folder`), resolved and checked again."""
    return data_roots().confine(folder if name == "." else resolve_inside(folder, name), kind="dir")
