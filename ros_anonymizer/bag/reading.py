"""Opening a bag for reading, where every way it can be unreadable stops with one sentence."""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from rosbags.rosbag2 import Reader, ReaderError

from ..errors import UserError

# What rosbags and its storages raise for bags that are not bags or are damaged.
_BAG_ERRORS = (ReaderError, OSError, sqlite3.Error, ValueError, KeyError, EOFError, AssertionError)


@contextmanager
def open_bag(src: Path) -> Iterator[Reader]:
    """An open rosbags Reader for a bag folder or a single .mcap / .db3 file."""
    if not Path(src).exists():
        raise UserError(f"the input bag {src} does not exist.")
    try:
        reader = Reader(src)
        reader.open()
    except FileNotFoundError:
        raise UserError(f"{src} is not a rosbag2 bag: it has no metadata.yaml (give the bag's folder, "
                        "or its .mcap or .db3 file).") from None
    except _BAG_ERRORS as e:
        raise UserError(f"{src} cannot be read as a rosbag2 bag ({_clause(e)}).") from None
    try:
        yield reader
    finally:
        reader.close()


def read_messages(messages: Iterable, src: Path) -> Iterator:
    """The reader's messages; a bag that turns out damaged half-way stops with one sentence."""
    try:
        yield from messages
    except _BAG_ERRORS as e:
        raise UserError(f"{src} is damaged and cannot be read to the end ({_clause(e)}).") from None


def _clause(e: Exception) -> str:
    """The first line of an error's text, to fit in one sentence (YAML errors span several)."""
    text = str(e).strip()
    return text.splitlines()[0].rstrip(".:") if text else type(e).__name__
