"""Run a command in a real pseudo-terminal (Python's pty module), as a user's terminal would:
a TERM, a window size, the output read as the terminal receives it, keys typed into it."""
from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class PtyRun:
    output: bytes = b""
    code: int | None = None
    events: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", errors="replace")


def run_in_pty(argv: list[str], env: dict[str, str], *, cwd: str, rows: int = 30, cols: int = 120,
               timeout: float = 60, on_output: Callable[[PtyRun, int], None] | None = None) -> PtyRun:
    """Run `argv` with a pty as its stdin, stdout and stderr (and controlling terminal) until it exits.

    `on_output(run, master_fd)` is called after each read, so a test can type into the terminal
    (e.g. os.write(master_fd, b"\\x03") for Ctrl-C) when it sees something. The process is killed
    and the test fails if it has not exited within `timeout` seconds."""
    env = {**env, "TERM": env.get("TERM", "xterm-256color"), "LINES": str(rows), "COLUMNS": str(cols)}
    pid, master = pty.fork()
    if pid == 0:  # the child: size the terminal, then become the command
        try:
            # as a shell starts a foreground job: Ctrl-C interrupts it even when the test run itself
            # was started in the background (`cmd &` in a script ignores SIGINT, and exec keeps that)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    run = PtyRun()
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"{argv} did not exit within {timeout}s; output so far:\n{run.text[-3000:]}")
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal (exited)
                break
            if not chunk:
                break
            run.output += chunk
            if on_output is not None:
                on_output(run, master)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(master)
    run.code = os.waitstatus_to_exitcode(status)
    return run
