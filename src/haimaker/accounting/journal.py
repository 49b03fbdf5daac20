"""The spend journal: every charge on local disk before its response is sent, replayed into the store after a crash.

The recorder writes charges to the store in groups, so between a charge's response and its group's commit the charge
lives only in memory. The journal closes that gap: `SpendRecorder.record()` appends each charge (and each spend reset,
in order) here synchronously, one `os.write` per record, and the store write that follows makes it redundant.

A journal directory may be shared by every process serving one store (uvicorn workers, instances on one host):

    <store>.<owner>.lock         an owner's lock file, `flock`ed exclusively by its live process
    <store>.<owner>.<n>.seg      the owner's segments (n: 8 digits), appended in order
    .replay.lock                 serialises the start-up replays of processes starting together

Invariants:
- One record is one line `<crc32 of payload, 8 hex> <orjson payload>\\n` written with one `os.write` on an
  `O_APPEND` descriptor; the payload is an array `[seq, kind, ...]`, and each segment starts with a header naming
  the fields of a charge. A crash can tear only the last line of a segment; a line with a bad CRC or without its
  newline is skipped on reading (its charge was never acknowledged: the write had not returned).
- Records carry the recorder's sequence number. A `written` record (kind "w") says every record up to its sequence
  number is in the store: replay skips those, so a reset is re-applied only if its own group may not have committed.
- An owner holds the lock on its lock file from before its first segment exists until after its last one is deleted
  (the lock file is created under a hidden name, locked, then renamed into place), so a replay never touches a live
  owner's segments. A lock that can be taken belongs to a dead process.
- A segment is deleted only once every record in it is in the store; segments rotate at `rotate_bytes`.
- `<store>` is a hash of the store's URL (without password): a journal is replayed only into the store it was
  written for.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import operator
import os
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

import orjson

from haimaker.accounting.dead_letters import DeadLetterBox
from haimaker.accounting.recorder import BudgetReset, SpendRecorder, SpendSink
from haimaker.state.counters import SpendReset
from haimaker.storage.records import SpendLog

logger = logging.getLogger("haimaker.journal")

FsyncPolicy = Literal["never", "group", "always"]
Item = SpendLog | SpendReset | BudgetReset

DEFAULT_DIRNAME: Final = "haimaker-journal"
ROTATE_BYTES: Final = 4 * 1024 * 1024
_READ_BYTES: Final = 1024 * 1024
_REPLAY_CHUNK: Final = 5_000
_OPEN_FLAGS: Final = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def store_key(store_identity: str) -> str:
    """The short name of a store in file names: a hash of its URL (rendered without its password)."""
    return hashlib.sha256(store_identity.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in an owner's journal: a segment number and a byte offset in it."""

    segment: int
    offset: int


@dataclass(slots=True)
class _Segment:
    number: int
    size: int = 0
    last_seq: int = 0


class SpendJournal:
    """The live journal of one process: its lock, its segments, the append-only write."""

    def __init__(
        self, directory: Path, prefix: str, lock_fd: int, *, fsync: FsyncPolicy, rotate_bytes: int = ROTATE_BYTES
    ) -> None:
        self.directory = directory
        self.fsync: FsyncPolicy = fsync
        self._prefix = prefix  # "<store>.<owner>"
        self._lock_fd = lock_fd
        self._rotate_bytes = rotate_bytes
        self._segments: list[_Segment] = []
        self._fd = -1
        self._live: _Segment  # the last of `_segments`, the one appended to
        self._checkpoint = 0
        self._dirty = False  # bytes written since the last group fsync
        self._retired: list[int] = []  # rotated descriptors a group fsync still owes a sync to
        self._new_entries = False  # a file was created or deleted since the last directory fsync
        self._open_segment(1)

    @classmethod
    def open(
        cls, directory: Path, store: str, *, fsync: FsyncPolicy = "never", rotate_bytes: int = ROTATE_BYTES
    ) -> SpendJournal:
        """Create this process's owner (lock file, first segment) in `directory` (blocking: call it in a thread)."""
        directory.mkdir(parents=True, exist_ok=True)
        owner = uuid.uuid4().hex[:16]
        hidden = directory / f".{owner}.tmp"
        fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Locked before it can be seen under its real name: a replay never finds this owner unlocked.
            os.rename(hidden, directory / f"{store}.{owner}.lock")
            return cls(directory, f"{store}.{owner}", fd, fsync=fsync, rotate_bytes=rotate_bytes)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(hidden)
            raise

    def _path(self, number: int) -> Path:
        return self.directory / f"{self._prefix}.{number:08d}.seg"

    def _open_segment(self, number: int) -> None:
        fd = os.open(self._path(number), _OPEN_FLAGS, 0o600)
        try:
            os.write(fd, _header_line())
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._live = _Segment(number, size=len(_header_line()))
        self._segments.append(self._live)
        self._new_entries = True
        self._dirty = True

    def append(self, seq: int, item: Item) -> None:
        """Write one record (one `os.write`; never awaits). Raises OSError when the disk refuses it."""
        # Once per charge on the event loop, so written flat (a charge encoded here, no `_write` call): ~0.1 µs of
        # record()'s ~2.9 µs. The rest is irreducible here: orjson ~1.0 µs (the field getter 0.37, dumps 0.5), CRC and
        # line 0.36, write() 0.6 (bench.journal --micro and docs/durability.md).
        payload = orjson.dumps([seq, "c", _log_values(item)]) if type(item) is SpendLog else _encode(seq, item)
        line = b"%08x %b\n" % (zlib.crc32(payload), payload)
        written = os.write(self._fd, line)
        if written < len(line):
            self._finish(line, written)
        live = self._live
        live.size += len(line)
        live.last_seq = seq
        self._dirty = True
        if self.fsync == "always":
            os.fdatasync(self._fd)
        if live.size >= self._rotate_bytes:
            self._rotate()

    def _finish(self, line: bytes, written: int) -> None:
        # Only a full disk or a signal shortens a regular file's write: finish the line.
        while written < len(line):
            written += os.write(self._fd, line[written:])

    def _write(self, payload: bytes) -> None:
        line = b"%08x %b\n" % (zlib.crc32(payload), payload)
        self._finish(line, os.write(self._fd, line))
        self._live.size += len(line)
        self._dirty = True

    def _rotate(self) -> None:
        old = self._fd
        try:
            self._open_segment(self._segments[-1].number + 1)
        except OSError:
            # The record is written; keep appending to the segment we have rather than refuse charges.
            logger.exception("spend journal: could not start a new segment")
            return
        if self.fsync == "group":
            self._retired.append(old)  # closed by the next group fsync, once synced
        else:
            os.close(old)

    @property
    def size_bytes(self) -> int:
        """Bytes of this journal's segments on disk (as written; no I/O)."""
        return sum(segment.size for segment in self._segments)

    def tell(self) -> Position:
        """Where the next record will start."""
        return Position(self._live.number, self._live.size)

    async def mark_written(self, seq: int) -> None:
        """Every record up to `seq` is in the store: note it, and delete the segments that hold nothing else.

        The deletion runs in a worker thread: unlinking a 1 MB segment takes ~110 µs on ext4 and longer while its
        pages are under writeback, time the event loop would not serve requests. A crash before it happens only
        leaves a segment whose charges replay writes again (idempotent by request id)."""
        if seq <= self._checkpoint:
            return
        self._checkpoint = seq
        live = self._live
        if live.size and live.last_seq <= seq and live.size * 4 >= self._rotate_bytes:
            # Wholly written and a quarter full: start afresh, so that the file is deleted below.
            self._rotate()
        elif live.size:
            self._write(orjson.dumps([seq, "w"]))
        redundant: list[Path] = []
        while len(self._segments) > 1 and self._segments[0].last_seq <= seq:
            redundant.append(self._path(self._segments.pop(0).number))
        if redundant:
            self._new_entries = True
            await asyncio.to_thread(_unlink_all, redundant)

    async def sync(self) -> None:
        """fsync what was written since the last call (policy `group`), in a worker thread."""
        if self._fd < 0 or not (self._dirty or self._new_entries):
            return
        fds = [os.dup(self._fd), *self._retired]
        self._retired = []
        sync_directory, self._dirty, self._new_entries = self._new_entries, False, False
        await asyncio.to_thread(_sync, fds, self.directory if sync_directory else None)

    def read(self, start: Position, end: Position, limit: int) -> tuple[list[Item], Position]:
        """Up to `limit` items from `start` to `end` (both from `tell()`), and where reading stopped.

        Safe in a worker thread while the loop appends: it reads only bytes before `end`, written completely.
        """
        items: list[Item] = []
        position = start
        while position < end and len(items) < limit:
            stop = end.offset if position.segment == end.segment else None
            consumed, done = _read_segment(
                self._path(position.segment), position.offset, stop, limit - len(items), items
            )
            position = Position(position.segment, position.offset + consumed)
            if done and position.segment < end.segment:
                position = Position(position.segment + 1, 0)
            elif not done:
                break
        return items, position

    def close(self, *, clean: bool) -> None:
        """Release the journal; with `clean` (everything is in the store), delete its files too."""
        for fd in [self._fd, *self._retired]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fd, self._retired = -1, []
        if clean:
            for segment in self._segments:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(segment.number))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / f"{self._prefix}.lock")
        os.close(self._lock_fd)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink()


def _sync(fds: list[int], directory: Path | None) -> None:
    try:
        for fd in fds:
            os.fdatasync(fd)
        if directory is not None:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        for fd in fds:
            os.close(fd)


def _read_segment(path: Path, offset: int, stop: int | None, limit: int, items: list[Item]) -> tuple[int, bool]:
    """Append up to `limit` items of one segment from `offset`; return (bytes consumed, reached `stop`/the end)."""
    consumed = 0
    decoder = _Decoder()
    with path.open("rb") as file:
        if offset > 0:
            decoder.decode(file.readline().rstrip(b"\n"))  # the segment's header: the names of a charge's fields
        file.seek(offset)
        rest = b""
        while True:
            want = _READ_BYTES if stop is None else min(_READ_BYTES, stop - offset - consumed - len(rest))
            chunk = file.read(want) if want > 0 else b""
            if not chunk:
                # A tail without newline is a torn record (or beyond `stop`, none): nothing more here.
                return consumed + len(rest), True
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                consumed += len(line) + 1
                decoded = decoder.decode(line)
                if decoded is not None and decoded[1] is not None:
                    items.append(decoded[1])
                    if len(items) >= limit:
                        return consumed, False


_LOG_FIELDS: Final = tuple(f.name for f in fields(SpendLog))
_log_values: Final = operator.attrgetter(*_LOG_FIELDS)


def _encode(seq: int, item: Item) -> bytes:
    # Positional arrays: a charge serialises in ~2 µs this way, ~4x faster than as an object. The field names are in
    # each segment's header, so a journal written by another version still reads back by name.
    if isinstance(item, SpendLog):
        return orjson.dumps([seq, "c", _log_values(item)])
    if isinstance(item, SpendReset):
        return orjson.dumps([seq, "r", item.customer_id, item.next_reset_at])
    return orjson.dumps([seq, "b", item.budget_id, item.include_unbudgeted, item.now, item.next_reset_at])


_HEADER: Final = orjson.dumps([0, "h", _LOG_FIELDS])


def _header_line() -> bytes:
    return b"%08x %b\n" % (zlib.crc32(_HEADER), _HEADER)


class _Decoder:
    """Reads the lines of one segment; its header names the fields of the charges after it."""

    def __init__(self) -> None:
        self._fields: tuple[str, ...] = ()

    def decode(self, line: bytes) -> tuple[int, Item | None] | None:
        """(seq, item) of one line, item None for a header or `written` record; None for a torn or corrupt line."""
        if len(line) < 10 or line[8:9] != b" ":
            return None if not line else self._unreadable(line)
        payload = line[9:]
        try:
            if int(line[:8], 16) != zlib.crc32(payload):
                return self._unreadable(line)
            record = orjson.loads(payload)
            seq, kind = int(record[0]), record[1]
            if kind == "c":
                values = dict(zip(self._fields, record[2], strict=True))
                values["start_time"] = datetime.fromisoformat(values["start_time"])
                values["end_time"] = datetime.fromisoformat(values["end_time"])
                return seq, SpendLog(**values)
            if kind == "w":
                return seq, None
            if kind == "h":
                self._fields = tuple(record[2])
                return seq, None
            if kind == "r":
                return seq, SpendReset(record[2], datetime.fromisoformat(record[3]))
            if kind == "b":
                now, next_at = datetime.fromisoformat(record[4]), datetime.fromisoformat(record[5])
                return seq, BudgetReset(record[2], bool(record[3]), now, next_at)
        except (ValueError, KeyError, TypeError, IndexError):
            pass
        return self._unreadable(line)

    @staticmethod
    def _unreadable(line: bytes) -> None:
        logger.error("spend journal: skipping an unreadable record (%d bytes)", len(line))
        return None


@dataclass(slots=True)
class DeadOwner:
    """The journal of a process that is gone, locked by the replaying process until `remove()`."""

    lock_path: Path
    lock_fd: int
    segments: list[Path] = field(default_factory=list)

    def chunks(self, size: int = _REPLAY_CHUNK) -> Iterator[list[Item]]:
        """Its items not yet known to be in the store, in order, `size` at a time (blocking reads)."""
        written = 0
        for path in self.segments:  # first pass: the last `written` mark
            for seq, item in _records(path):
                if item is None:
                    written = max(written, seq)
        chunk: list[Item] = []
        for path in self.segments:
            for seq, item in _records(path):
                if item is not None and seq > written:
                    chunk.append(item)
                    if len(chunk) >= size:
                        yield chunk
                        chunk = []
        if chunk:
            yield chunk

    def remove(self) -> None:
        """Everything is in the store: delete the segments, then the lock file (that order: see `claim_dead`)."""
        for path in self.segments:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.lock_path.unlink()
        self.release()

    def release(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def _records(path: Path) -> Iterator[tuple[int, Item | None]]:
    decoder = _Decoder()
    with path.open("rb") as file:
        rest = b""
        while chunk := file.read(_READ_BYTES):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                decoded = decoder.decode(line)
                if decoded is not None:
                    yield decoded
        if rest:
            logger.warning("spend journal %s: torn last record skipped (never acknowledged)", path.name)


def claim_dead(directory: Path, store: str) -> list[DeadOwner]:
    """Lock and return the journals of dead processes of `store` in `directory` (blocking: call it in a thread)."""
    if not directory.is_dir():
        return []
    names = sorted(os.listdir(directory))
    dead: list[DeadOwner] = []
    for name in names:
        path = directory / name
        if name.startswith(".") and name.endswith(".tmp"):
            _remove_unborn(path)
            continue
        if not (name.startswith(f"{store}.") and name.endswith(".lock")):
            continue
        fd = _lock_if_dead(path)
        if fd is None:
            continue
        prefix = name[: -len(".lock")]
        segments = sorted(directory / n for n in names if n.startswith(prefix + ".") and n.endswith(".seg"))
        dead.append(DeadOwner(path, fd, segments))
    # Segments whose lock file is gone: a replay deletes segments before the lock file, so these are left over
    # from a replay that crashed half-way through deleting; nobody owns them.
    owned = {owner.lock_path.name[: -len(".lock")] for owner in dead}
    live_or_dead = {n[: -len(".lock")] for n in names if n.endswith(".lock")}
    orphans: dict[str, list[Path]] = {}
    for name in names:
        if name.startswith(f"{store}.") and name.endswith(".seg"):
            prefix = name.rsplit(".", 2)[0]
            if prefix not in owned and prefix not in live_or_dead:
                orphans.setdefault(prefix, []).append(directory / name)
    for prefix, segments in orphans.items():
        dead.append(DeadOwner(directory / f"{prefix}.lock", -1, sorted(segments)))
    return dead


# Far longer than the create-lock-rename of `SpendJournal.open` can take, however loaded the machine.
_UNBORN_GRACE_S = 60.0


def _lock_if_dead(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # its owner finished a clean shutdown meanwhile
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise FileNotFoundError(path)  # replaced meanwhile
    except OSError:
        os.close(fd)
        return None  # a live owner (or gone)
    return fd


def _remove_unborn(path: Path) -> None:
    """A hidden lock file whose process died before renaming it: it never had a segment.

    A young one is left alone: its process may be between creating it and locking it (a second, starting together,
    would otherwise lock it first, take it for dead and delete it under its owner)."""
    try:
        age_s = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return
    if age_s < _UNBORN_GRACE_S:
        return
    fd = _lock_if_dead(path)
    if fd is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


@dataclass(frozen=True, slots=True)
class ReplayReport:
    journals: int = 0
    charges: int = 0
    resets: int = 0


async def replay_dead(
    directory: Path, store: str, sink: SpendSink, *, dead_letters: DeadLetterBox | None = None
) -> ReplayReport:
    """Write into the store every journaled item of the dead processes of `store`, in order, then delete them.

    Idempotent: charges are keyed by request id, resets apply only to customers whose period they end, and a journal
    is deleted only after its items are written; a crash during replay leaves it for the next start. Items go through
    a recorder of their own (its grouping, and `dead_letters` for what the store cannot hold), never through the live
    journal.
    """
    directory.mkdir(parents=True, exist_ok=True)
    guard = await asyncio.to_thread(_lock_replay, directory)
    try:
        owners = await asyncio.to_thread(claim_dead, directory, store)
        if not owners:
            return ReplayReport()
        charges = resets = 0
        recorder = SpendRecorder(sink, dead_letters=dead_letters)
        recorder.start()
        try:
            for owner in owners:
                chunks = owner.chunks()
                while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                    for item in chunk:
                        if isinstance(item, SpendLog):
                            recorder.record(item)
                            charges += 1
                        elif isinstance(item, SpendReset):
                            recorder.reset_customer(item)
                            resets += 1
                        else:
                            recorder.reset_budget(item)
                            resets += 1
                    await recorder.flush()
                await asyncio.to_thread(owner.remove)
        finally:
            await recorder.aclose()
            for owner in owners:
                owner.release()
        report = ReplayReport(len(owners), charges, resets)
        logger.warning(
            "spend journal: replayed %d charges and %d resets from %d journal(s) of stopped processes",
            charges,
            resets,
            len(owners),
        )
        return report
    finally:
        os.close(guard)


def _lock_replay(directory: Path) -> int:
    fd = os.open(directory / ".replay.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # processes starting together replay one after the other
    return fd
