"""digest.files: the guards on files a user names, for ingest inputs and subscriber CSV."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from digest.files import FileRefused, check_replaceable, read_regular_file
from digest.ingest import read_input
from digest.sources import InputError


def test_a_regular_file_is_read_whole_up_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "input.txt"
    path.write_bytes(b"x" * 10)
    assert read_regular_file(path, 10, "a.limit") == b"x" * 10
    with pytest.raises(FileRefused, match=r"^file is 10 bytes, over the 9 byte limit \(a.limit\)$"):
        read_regular_file(path, 9, "a.limit")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: os.mkfifo(p), "is a named pipe (FIFO), not a regular file"),
        (lambda p: p.mkdir(), "is a folder, not a regular file"),
        (lambda p: None, "no such file"),
    ],
    ids=["fifo", "folder", "missing"],
)
def test_anything_else_is_refused_without_blocking(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "input"
    make(path)
    with pytest.raises(FileRefused) as refused:
        read_regular_file(path, 100, "a.limit")
    assert str(refused.value) == message


def test_an_endless_device_is_refused_before_reading() -> None:
    with pytest.raises(FileRefused, match=r"^is a device, not a regular file$"):
        read_regular_file(Path("/dev/zero"), 1 << 30, "a.limit")


def test_ingest_reads_its_file_inputs_through_the_same_guard(tmp_path: Path) -> None:
    fifo = tmp_path / "feed.xml"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=r"^is a named pipe \(FIFO\), not a regular file$"):
        read_input(str(fifo), 100, None)
    with pytest.raises(InputError, match=r"^is a device, not a regular file$"):
        read_input("/dev/zero", 100, None)


def test_only_a_regular_file_or_a_new_path_may_be_replaced(tmp_path: Path) -> None:
    regular = tmp_path / "out.csv"
    regular.write_text("old", encoding="utf-8")
    check_replaceable(regular)
    check_replaceable(tmp_path / "new.csv")
    link = tmp_path / "link.csv"
    link.symlink_to(regular)
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    for path, kind in (
        (link, "a symbolic link"),
        (fifo, "a named pipe (FIFO)"),
        (Path("/dev/full"), "a device"),
    ):
        with pytest.raises(FileRefused) as refused:
            check_replaceable(path)
        assert (
            str(refused.value) == f"{path} is {kind}: write to a regular file or a new path instead"
        )
