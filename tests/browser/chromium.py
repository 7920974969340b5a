"""Debian's chromium, headless, for tests that look at what a browser draws.

`require()` gives a `Chromium` or skips the test saying why: the tests need the Debian package
`chromium` (/usr/bin/chromium); `make test` installs it where it can. Each call runs one
short-lived browser with its own profile, no network name resolution and a hard deadline, and
ends the browser's whole process group, so nothing is left running.
"""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
DEADLINE_S = 120


def missing_reason(path: Path = CHROMIUM) -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not path.exists():
        return f"{path} is not installed: the browser tests need Debian's chromium (apt-get install -y chromium)"
    if not os.access(path, os.X_OK):
        return f"{path} is not executable"
    return None


def require(profile: Path) -> Chromium:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    return Chromium(CHROMIUM, profile)


@dataclass(frozen=True)
class Chromium:
    path: Path
    profile: Path  # the browser's own user data directory

    def dump_dom(self, page: Path) -> str:
        """The DOM after the page loaded, serialised as HTML."""
        return self._run("--dump-dom", page.resolve().as_uri())

    def screenshot(self, page: Path, out: Path, width: int = 1280, height: int = 2200) -> Path:
        """A PNG of the page's first `height` CSS pixels at `width`."""
        self._run(f"--screenshot={out}", f"--window-size={width},{height}", page.resolve().as_uri())
        if not out.exists():
            raise AssertionError(f"chromium wrote no screenshot to {out}")
        return out

    def _run(self, *args: str) -> str:
        command = [str(self.path), "--headless", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                   "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                   "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={self.profile}",
                   *(["--no-sandbox"] if os.geteuid() == 0 else []), *args]  # chromium refuses root with a sandbox
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, err = process.communicate(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise AssertionError(f"chromium did not finish within {DEADLINE_S} s: {' '.join(args)}") from None
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # its helpers (zygote, renderer), if any are left
            except ProcessLookupError:
                pass
        if process.returncode != 0:
            raise AssertionError(f"chromium exited {process.returncode}: {err[-2000:]}")
        return out


@dataclass(frozen=True)
class Png:
    width: int
    height: int
    channels: int  # 3 (RGB) or 4 (RGBA)
    data: bytes  # the zlib stream of filtered scanlines


def read_png(path: Path) -> Png:
    """An 8-bit, non-interlaced RGB(A) PNG, as chromium writes screenshots."""
    blob = path.read_bytes()
    if blob[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    pos, idat = 8, []
    width = height = channels = 0
    while pos < len(blob):
        (size,) = struct.unpack(">I", blob[pos:pos + 4])
        kind, body = blob[pos + 4:pos + 8], blob[pos + 8:pos + 8 + size]
        pos += 12 + size
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (2, 6) or interlace:
                raise ValueError(f"{path}: unsupported PNG (depth {depth}, colour type {colour}, interlace {interlace})")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
    return Png(width, height, channels, zlib.decompress(b"".join(idat)))


def rows(png: Png) -> Iterator[bytes]:
    """The image's rows top to bottom, unfiltered (PNG filters 0-4), as RGB(A) bytes."""
    n, stride = png.channels, png.width * png.channels
    prev = bytearray(stride)
    for y in range(png.height):
        start = y * (stride + 1)
        kind, row = png.data[start], bytearray(png.data[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(n, stride):
                row[i] = (row[i] + row[i - n]) & 255
        elif kind == 2:
            row = bytearray((a + b) & 255 for a, b in zip(row, prev))
        elif kind == 3:
            for i in range(stride):
                row[i] = (row[i] + ((row[i - n] if i >= n else 0) + prev[i]) // 2) & 255
        elif kind == 4:
            for i in range(stride):
                a, b, c = (row[i - n], prev[i], prev[i - n]) if i >= n else (0, prev[i], 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        yield bytes(row)
        prev = row


def count_colours(png: Png, wanted: Mapping[str, tuple[int, int, int]], enough: Mapping[str, int]) -> dict[str, int]:
    """Pixels of each exact colour, counted from the top until every one reaches its `enough`."""
    targets = {name: bytes(rgb) for name, rgb in wanted.items()}
    counts = dict.fromkeys(wanted, 0)
    n = png.channels
    for row in rows(png):
        pixels = row if n == 3 else b"".join(row[i:i + 3] for i in range(0, len(row), 4))
        for name, rgb in targets.items():
            # count whole pixels only: a match must start on a pixel boundary
            i = pixels.find(rgb)
            while i != -1:
                if i % 3 == 0:
                    counts[name] += 1
                    i = pixels.find(rgb, i + 3)
                else:
                    i = pixels.find(rgb, i + 1)
        if all(counts[name] >= enough[name] for name in counts):
            break
    return counts
