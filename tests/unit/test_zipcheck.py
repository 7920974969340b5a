"""zipcheck.unsafe_member: zips built in memory with the standard zipfile module."""
from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib

import pytest

from shared.zipcheck import MAX_MEMBERS, unsafe_member


def build(*members, comment: bytes = b"") -> bytes:
    """A zip of (name or ZipInfo, data) pairs."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for member, data in members:
            z.writestr(member, data)
        z.comment = comment
    return out.getvalue()


def check(data: bytes, **kwargs) -> str | None:
    return unsafe_member(io.BytesIO(data), **kwargs)


def info(name: str, mode: int) -> zipfile.ZipInfo:
    member = zipfile.ZipInfo(name)
    member.create_system = 3  # Unix: the high 16 bits of external_attr are st_mode
    member.external_attr = mode << 16
    return member


class CountingFile(io.BytesIO):
    """A real in-memory file that counts the bytes read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, n=-1):
        data = super().read(n)
        self.bytes_read += len(data)
        return data


def test_plain_files_and_directories_are_safe():
    data = build(("top.txt", b"1"), ("dir/", b""), ("dir/sub/deep.db", b"2" * 1000), ("ünïcode/naïve.txt", b"3"),
                 ("dots..in..name.txt", b""), ("./here.txt", b""), (info("exe.sh", stat.S_IFREG | 0o755), b"#!"),
                 (info("d/", stat.S_IFDIR | 0o755), b""))
    assert check(data) is None
    assert check(build()) is None  # an empty zip unpacks nothing


@pytest.mark.parametrize("name, why", [
    ("../evil.txt", "'..' part"),
    ("a/../../evil.txt", "'..' part"),
    ("a/..", "'..' part"),
    ("..\\evil.txt", "'..' part"),
    ("/etc/cron.d/x", "absolute path"),
    ("\\x", "absolute path"),
    ("C:\\x", "drive letter"),
    ("c:x", "drive letter"),
])
def test_members_that_leave_the_directory_are_named(name, why):
    result = check(build(("fine.txt", b"ok"), (name, b"bad"), ("../second", b"bad")))
    assert result is not None and result.startswith(f"member {name!r} ") and why in result


def test_symbolic_links_and_special_files_are_refused():
    link = check(build(("fine.txt", b"ok"), (info("resources/link", stat.S_IFLNK | 0o777), b"/etc/passwd")))
    assert link == "member 'resources/link' is a symbolic link (it could point outside the unpack directory)"
    fifo = check(build((info("pipe", stat.S_IFIFO | 0o644), b"")))
    assert fifo.startswith("member 'pipe' is a special file")
    # the mode is judged whatever system the zip says made it
    windows_made = info("link2", stat.S_IFLNK | 0o777)
    windows_made.create_system = 0
    assert "symbolic link" in check(build((windows_made, b"/etc")))


def test_a_unicode_path_field_is_judged_too():
    """unzip prefers an Info-ZIP Unicode Path extra field's name over the plain one."""
    member = zipfile.ZipInfo("innocent.txt")
    hidden = b"../../home/x/.profile"
    body = b"\x01" + struct.pack("<L", zlib.crc32(b"innocent.txt")) + hidden
    member.extra = struct.pack("<2H", 0x7075, len(body)) + body
    result = check(build((member, b"x")))
    assert result.startswith("member 'innocent.txt' has a '..' part") and "../../home/x/.profile" in result


def test_a_nul_in_a_name_is_refused():
    raw = build(("aXb.txt", b"x")).replace(b"aXb.txt", b"a\0b.txt")
    assert check(raw) == "member 'a\\x00b.txt' has a NUL character in its name"


@pytest.mark.parametrize("data", [b"", b"hello, I am a CSV\n1,2\n", bytes(range(256)) * 300, b"PK\x03\x04 truncated"])
def test_what_is_not_a_zip_is_refused(data):
    assert check(data).startswith("not a zip file")


def test_a_damaged_or_cut_zip_is_refused():
    data = build(("a.txt", b"1"), ("b.txt", b"2"))
    directory_at = data.rfind(b"PK\x01\x02")
    damaged = data[:directory_at] + b"XX" + data[directory_at + 2:]
    assert check(damaged).startswith("not a valid zip file")
    assert check(data[:-10]).startswith("not a zip file")  # its end record is cut off


def test_a_directory_that_disagrees_with_its_end_record_is_refused():
    data = bytearray(build(("a.txt", b"1"), ("b.txt", b"2")))
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<2H", data, end + 8, 1, 1)  # says one member; the directory holds two
    assert check(bytes(data)) == "not a valid zip file: its directory lists 2 members, its end record says 1"


def test_data_before_the_zip_is_fine():
    """A self-extracting zip (a program, then the zip): unpackers find the directory from the end."""
    assert check(b"#!/bin/sh\n" * 1000 + build(("a.txt", b"1"))) is None
    assert "'..' part" in check(b"MZ" * 500 + build(("../a.txt", b"1")))


def test_a_comment_is_skipped():
    assert check(build(("a.txt", b"1"), comment=b"made by hand " * 100)) is None


def test_member_count_is_bounded():
    members = [(f"f{i}", b"") for i in range(11)]
    assert check(build(*members), max_members=11) is None
    assert check(build(*members), max_members=10) == "has 11 members; at most 10 are allowed"
    assert MAX_MEMBERS == 100_000


def test_the_bound_holds_before_the_directory_is_read():
    """A zip whose end record claims more members than allowed costs one read of its end."""
    data = build(("padding.bin", bytes(1024 * 1024)), *[(f"f{i}", b"") for i in range(3000)])
    f = CountingFile(data)
    assert unsafe_member(f, max_members=100) == "has 3,001 members; at most 100 are allowed"
    assert f.bytes_read == 22 + 0xFFFF  # the end record and the longest comment it could have, nothing more


def test_zip64_directories_are_read():
    """More than 65,535 members: the counts live in the zip64 end records."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for i in range(65_540):
            z.writestr(f"m{i}", b"")
        z.writestr("sub/../../escape", b"")
    data = out.getvalue()
    assert b"PK\x06\x06" in data[-200:]
    assert check(data) == "member 'sub/../../escape' has a '..' part (it would be unpacked outside the unpack directory)"
    assert check(data, max_members=65_540) == "has 65,541 members; at most 65,540 are allowed"


def test_only_the_directory_is_read_never_the_members_data():
    big = bytes(8 * 1024 * 1024)  # stored, not compressed: 8 MiB of member data
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("big.bin", big)
        z.writestr("../late.txt", b"x")
    f = CountingFile(out.getvalue())
    assert "'../late.txt'" in unsafe_member(f)
    assert f.bytes_read < 128 * 1024


def test_an_undecodable_name_is_refused():
    raw = build(("name.txt", b"x"))
    data = bytearray(raw)
    for at in (raw.find(b"PK\x03\x04"), raw.rfind(b"PK\x01\x02")):  # set the UTF-8 flag in both headers
        flag_at = at + (6 if data[at + 2] == 3 else 8)
        struct.pack_into("<H", data, flag_at, struct.unpack_from("<H", data, flag_at)[0] | 0x800)
    data = bytes(data).replace(b"name.txt", b"n\xffme.txt")
    assert "not valid utf-8" in check(data)
