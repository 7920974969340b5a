"""Is a zip safe to unpack on a node? Judged from its central directory alone.

A resource with ``"unzip": true`` is unpacked by the job preparation task into the directory every
task reads. A member named ``../x``, ``/etc/x``, ``C:\\x`` or ``\\x`` would land outside it, and a
symbolic link member would point anywhere (``unzip`` creates links and writes through them), so
such a zip is refused at intake, naming the member, before anything runs.

Guarantees of `unsafe_member`:
- it reads the end records and the central directory only, never a member's data: a multi-GB zip
  costs two small reads at its end plus the directory, read in chunks of at most CHUNK_BYTES;
- work is bounded: at most MAX_DIRECTORY_BYTES of directory and MAX_MEMBERS members are looked at
  (a zip with more is refused, not partly checked), memory is one chunk plus one member's header;
- it judges every name an unpacker could use: the directory's name (UTF-8 or CP437, as the zip says)
  and an Info-ZIP Unicode Path extra field's name, with ``/`` and ``\\`` both taken as separators;
- it refuses anything it cannot read as one consistent, single-disk zip, including a file that is not a
  zip at all; it never raises for a malformed file (only the file object's own errors propagate).
"""
from __future__ import annotations

import re
import stat
import struct
from collections.abc import Iterator
from typing import BinaryIO

MAX_MEMBERS = 100_000
MAX_DIRECTORY_BYTES = 64 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record (22 bytes + comment)
_EOCD_SIG = b"PK\x05\x06"
_LOCATOR = struct.Struct("<4sLQL")  # zip64 end of central directory locator
_LOCATOR_SIG = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory record, right before the locator
_EOCD64_SIG = b"PK\x06\x06"
_MEMBER = struct.Struct("<4s4B4HL2L5H2L")  # central directory file header (46 bytes), as zipfile reads it
_MEMBER_SIG = b"PK\x01\x02"
_UTF8_NAME = 0x800
_UNICODE_PATH = 0x7075  # Info-ZIP Unicode Path extra field: unzip prefers its name
_SEPARATORS = re.compile(r"[/\\]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_ALLOWED_TYPES = (0, stat.S_IFREG, stat.S_IFDIR)  # 0: no Unix mode recorded (plain file or directory)
_SHOWN_NAME = 200


class _Unsafe(Exception):
    """Why the zip is refused (internal: `unsafe_member` returns the text)."""


def unsafe_member(fileobj: BinaryIO, max_members: int = MAX_MEMBERS) -> str | None:
    """None when every member would unpack inside the target directory as a plain file or directory;
    otherwise why not, naming the first offending member (``member '../x' ...``), or saying why the
    file cannot be judged (``not a zip file ...``, ``more than 100,000 members``).

    `fileobj`: a seekable binary file object positioned anywhere (e.g. `storage.open_blob_seekable`)."""
    try:
        start, size, count = _directory(fileobj, max_members)
        seen = 0
        for name, names, mode in _members(fileobj, start, size):
            seen += 1
            if seen > count:
                break
            why = _why_unsafe(names, mode)
            if why:
                return f"member {_show(name)} {why}"
        if seen != count:
            raise _Unsafe(f"not a valid zip file: its directory lists {seen} members, its end record says {count}")
    except _Unsafe as e:
        return str(e)
    return None


def _directory(f: BinaryIO, max_members: int) -> tuple[int, int, int]:
    """(offset, size, member count) of the central directory, from the end records, within the bounds."""
    end = f.seek(0, 2)
    window = min(end, _EOCD.size + 0xFFFF)  # the record plus the longest possible comment
    tail = _read_at(f, end - window, window)
    at = tail.rfind(_EOCD_SIG)  # the last one, as zipfile and unzip take it
    if at < 0 or at + _EOCD.size > len(tail):
        raise _Unsafe("not a zip file: it has no end of central directory record")
    _, disk, cd_disk, _, count, size, _, _ = _EOCD.unpack_from(tail, at)
    location = end - window + at
    zip64 = _zip64(_Known(f, end - window, tail), location)
    if zip64 is not None:  # zipfile then takes its numbers; saturated 32-bit ones just say "see zip64"
        if count not in (0xFFFF, zip64[3]) or size not in (0xFFFFFFFF, zip64[4]):
            raise _Unsafe("not a valid zip file: its end records disagree")
        location, disk, cd_disk, count, size = zip64
    if disk or cd_disk:
        raise _Unsafe("not a usable zip file: it spans several disks")
    if count > max_members:
        raise _Unsafe(f"has {count:,} members; at most {max_members:,} are allowed")
    if size > MAX_DIRECTORY_BYTES:
        raise _Unsafe(f"its central directory is {size:,} bytes; at most {MAX_DIRECTORY_BYTES:,} are allowed")
    start = location - size
    if start < 0:
        raise _Unsafe("not a valid zip file: its central directory would start before the file")
    return start, size, count


def _zip64(f: _Known, eocd_at: int) -> tuple[int, int, int, int, int] | None:
    """(location, disk, directory disk, count, size) from the zip64 records, placed right before the end
    record as zipfile expects them; None when there are none."""
    locator_at = eocd_at - _LOCATOR.size
    locator = f.read_at(locator_at, _LOCATOR.size) if locator_at >= 0 else b""
    if locator[:4] != _LOCATOR_SIG:
        return None
    _, locator_disk, _, disks = _LOCATOR.unpack(locator)
    record_at = locator_at - _EOCD64.size
    record = f.read_at(record_at, _EOCD64.size) if record_at >= 0 else b""
    if record[:4] != _EOCD64_SIG:
        raise _Unsafe("not a valid zip file: its zip64 end record is missing")
    _, _, _, _, disk, cd_disk, _, count, size, _ = _EOCD64.unpack(record)
    if locator_disk or disks > 1:
        disk = max(disk, 1)
    return record_at, disk, cd_disk, count, size


class _Known:
    """A file whose bytes from `start` on are already read (`data`): no second read for those."""

    def __init__(self, f: BinaryIO, start: int, data: bytes) -> None:
        self._f, self._start, self._data = f, start, data

    def read_at(self, offset: int, n: int) -> bytes:
        if offset >= self._start:
            return self._data[offset - self._start:offset - self._start + n]
        return _read_at(self._f, offset, n)


def _members(f: BinaryIO, start: int, size: int) -> Iterator[tuple[str, list[str], int]]:
    """Each member as (name, every name an unpacker may use, file type bits), in directory order."""
    region = _Region(f, start, size)
    while not region.exhausted():
        head = region.take(_MEMBER.size)
        if head[:4] != _MEMBER_SIG:
            raise _Unsafe("not a valid zip file: its central directory is damaged")
        fields = _MEMBER.unpack(head)
        flags, name_len, extra_len, comment_len, external = fields[5], fields[12], fields[13], fields[14], fields[17]
        raw = region.take(name_len + extra_len + comment_len)
        name = _decode(raw[:name_len], "utf-8" if flags & _UTF8_NAME else "cp437", raw[:name_len])
        names = [name, *_unicode_path_names(raw[name_len:name_len + extra_len])]
        yield name, names, stat.S_IFMT(external >> 16)


def _why_unsafe(names: list[str], mode: int) -> str | None:
    for name in names:
        why = _why_unsafe_name(name)
        if why:
            return why if name == names[0] else f"{why} (in its Unicode path field: {_show(name)})"
    if mode == stat.S_IFLNK:
        return "is a symbolic link (it could point outside the unpack directory)"
    if mode not in _ALLOWED_TYPES:
        return "is a special file (device, FIFO or socket), not a plain file or directory"
    return None


def _why_unsafe_name(name: str) -> str | None:
    if not name:
        return "has an empty name"
    if "\0" in name:
        return "has a NUL character in its name"
    if name[0] in "/\\":
        return "is an absolute path (it would be unpacked outside the unpack directory)"
    if _DRIVE.match(name):
        return "starts with a drive letter (it would be unpacked outside the unpack directory)"
    if ".." in _SEPARATORS.split(name):
        return "has a '..' part (it would be unpacked outside the unpack directory)"
    return None


def _unicode_path_names(extra: bytes) -> Iterator[str]:
    """Names held in Info-ZIP Unicode Path extra fields (version byte, CRC-32 of the plain name, UTF-8 name)."""
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<2H", extra, at)
        body = extra[at + 4:at + 4 + length]
        if kind == _UNICODE_PATH and len(body) >= 5:
            yield _decode(body[5:], "utf-8", body[5:])
        at += 4 + length


def _decode(raw: bytes, encoding: str, original: bytes) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        raise _Unsafe(f"member {original[:_SHOWN_NAME]!r} has a name that is not valid {encoding}") from None


def _show(name: str) -> str:
    shown = name if len(name) <= _SHOWN_NAME else name[:_SHOWN_NAME] + "..."
    return repr(shown)


def _read_at(f: BinaryIO, offset: int, n: int) -> bytes:
    """Up to `n` bytes from `offset` (fewer only at the end of the file), whatever one read() returns."""
    f.seek(offset)
    parts, got = [], 0
    while got < n:
        chunk = f.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class _Region:
    """Sequential reads of [start, start + size) of a file, CHUNK_BYTES per underlying read."""

    def __init__(self, f: BinaryIO, start: int, size: int) -> None:
        self._f, self._next, self._left = f, start, size
        self._buf, self._pos = b"", 0

    def exhausted(self) -> bool:
        return self._left == 0 and self._pos == len(self._buf)

    def take(self, n: int) -> bytes:
        if len(self._buf) - self._pos < n:
            self._refill(n)
        out = self._buf[self._pos:self._pos + n]
        self._pos += n
        return out

    def _refill(self, n: int) -> None:
        parts = [self._buf[self._pos:]]
        have = len(parts[0])
        while have < n and self._left:
            chunk = _read_at(self._f, self._next, min(max(CHUNK_BYTES, n - have), self._left))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
            self._next += len(chunk)
            self._left -= len(chunk)
        if have < n:
            raise _Unsafe("not a valid zip file: its central directory is truncated")
        self._buf, self._pos = b"".join(parts), 0
