"""Files under the sources: folders walked in name order, symbolic links followed, each file read once.

A link that leads back into a folder being walked (a loop), or to a folder or file already read, is
reported and not followed again; a broken link is reported and skipped. Only regular files are
yielded (never a FIFO or a device, which reading could block on).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from ...core.records import Problem


def iter_files(sources: Iterable[str | Path], problems: list[Problem] | None = None) -> Iterator[Path]:
    """Every file under the sources (files given directly are yielded as they are), in name order.

    Symbolic links to folders and files are followed; each folder and each file is read once. A link
    that leads back into a folder being walked (a loop) or to a folder or file already read is not
    followed again, and a broken link is skipped: each is reported in ``problems`` (when given) with
    the link's path.
    """
    seen: dict[tuple[int, int], Path] = {}

    def report(path: Path, message: str, level: str = "warning") -> None:
        if problems is not None:
            problems.append(Problem(str(path), message, level=level))

    for src in map(Path, sources):
        if src.is_dir():
            yield from _walk(src, (), seen, report)
        elif src.is_file():
            if _first_visit(src, seen, report, "file"):
                yield src
        elif src.is_symlink():
            report(src, f"broken symbolic link (to {os.readlink(src)}); skipped", level="error")


def _first_visit(path: Path, seen: dict[tuple[int, int], Path], report, what: str) -> bool:
    """True when the file or folder ``path`` (links followed) has not been read yet; else reported."""
    try:
        st = path.stat()
    except OSError:
        return True  # reading it reports the problem
    key = (st.st_dev, st.st_ino)
    if key in seen:
        report(path, f"the same {what} as {seen[key]} (a link); not read twice")
        return False
    seen[key] = path
    return True


def _walk(folder: Path, ancestors: tuple[tuple[int, int], ...], seen: dict[tuple[int, int], Path], report
          ) -> Iterator[Path]:
    """The files of ``folder``, then those of its sub-folders (name order, links followed once)."""
    try:
        st = folder.stat()
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        report(folder, f"cannot read this folder ({exc.strerror or exc}); skipped", level="error")
        return
    key = (st.st_dev, st.st_ino)
    if key in ancestors:
        report(folder, f"symbolic link loop: it leads back to {seen.get(key, 'a folder above it')}; not followed")
        return
    if not _first_visit(folder, seen, report, "folder"):
        return
    dirs = []
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
        except OSError:
            is_dir = is_file = False
        if is_dir:
            dirs.append(path)
        elif is_file:
            if _first_visit(path, seen, report, "file"):
                yield path
        elif entry.is_symlink():
            report(path, f"broken symbolic link (to {os.readlink(path)}); skipped", level="error")
    for sub in dirs:
        yield from _walk(sub, ancestors + (key,), seen, report)
