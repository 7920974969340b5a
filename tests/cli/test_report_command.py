"""`batchdrop report RUN [--open] [--out DIR]` against the real local stack: the run's report.html
saved where it says, opened with the platform's opener when there is one (never failing when there is
none), and the errors of a run with no report yet or none at all."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.services import wait_for

pytestmark = pytest.mark.e2e


def submit(cli_stack, tmp_path: Path, name: str, doc: dict, *args: str):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return cli_stack.call("submit", str(path), *args)


def opener_env(cli_stack, tmp_path: Path, browser: Path | None) -> dict[str, str]:
    """The CLI's environment with a PATH holding no browser and no display: the only opener is
    `browser` (given as $BROWSER, which Python's webbrowser honours), or none at all."""
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in cli_stack.env().items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER")}
    env["PATH"] = str(empty)
    if browser is not None:
        env["BROWSER"] = str(browser)
    return env


def test_report_saves_and_opens_the_page(cli_stack, tmp_path):
    done = submit(cli_stack, tmp_path, "report-ok.json", {"name": "cli-report", "command": 'cat "$INPUT_PATH" > '
                                                          '"$OUTPUT_PATH"', "input": {"items": [1, 2, 3]}},
                  "--wait", "--interval", "0.5")
    assert done.returncode == 0, (done, cli_stack.devhost_log())
    run_id = done.stdout.splitlines()[0]
    page = cli_stack.service.get_blob_client(cli_stack.settings.results_container,
                                             f"{run_id}/report.html").download_blob().readall()

    out = tmp_path / "pages"
    saved = cli_stack.call("report", run_id, "--out", str(out))
    assert saved.returncode == 0, saved
    assert saved.stdout == f"{out / 'report.html'}\n"  # where it is, alone on stdout
    assert (out / "report.html").read_bytes() == page and b"data-task=\"t000002\"" in page
    assert not list(out.glob("*.partial"))
    default = cli_stack.run("report", run_id)  # default folder: ./RUN, like `results` (run in the stack's workdir)
    assert default.returncode == 0, default
    assert default.stdout == f"{run_id}/report.html\n"
    assert (cli_stack.workdir / run_id / "report.html").read_bytes() == page

    # --open: with an opener (a fake browser recording what it was asked to open) ...
    seen = tmp_path / "opened.txt"
    browser = tmp_path / "fake-browser"
    browser.write_text(f'#!/bin/sh\necho "$1" > {seen}\n')
    os.chmod(browser, 0o755)
    opened = cli_stack.run("report", run_id, "--out", str(out), "--open", env=opener_env(cli_stack, tmp_path, browser))
    assert opened.returncode == 0, opened
    assert seen.read_text().strip() == (out / "report.html").resolve().as_uri()
    assert "opened" in opened.stderr
    # ... and with none: it says so, and still succeeds
    alone = cli_stack.run("report", run_id, "--out", str(out), "--open", env=opener_env(cli_stack, tmp_path, None))
    assert alone.returncode == 0, alone
    assert alone.stdout == f"{out / 'report.html'}\n"
    assert f"no browser to open it with here; open {(out / 'report.html').resolve()} in one" in alone.stderr


def test_report_of_a_run_with_no_report(cli_stack, tmp_path):
    unknown = cli_stack.call("report", "no-such-run-0123456789abcdef")
    assert unknown.returncode == 4 and "unknown run id" in unknown.stderr

    slow = submit(cli_stack, tmp_path, "report-slow.json", {"name": "cli-report-slow", "command": "sleep 30",
                                                             "input": {"items": [1]}})
    assert slow.returncode == 0, slow
    run_id = slow.stdout.splitlines()[0]
    wait_for(lambda: (cli_stack.status(run_id) or {}).get("state") == "running", timeout=30, what="run running")
    early = cli_stack.call("report", run_id)
    assert early.returncode == 6 and f"run {run_id} is still running" in early.stderr
    assert f"batchdrop watch {run_id}" in early.stderr
    assert cli_stack.call("cancel", run_id).returncode == 0

    rejected = submit(cli_stack, tmp_path, "report-rejected.json", {"command": "true", "input": {"blob": "data/none.jsonl"}})
    assert rejected.returncode == 0, rejected
    bad_id = rejected.stdout.splitlines()[0]
    wait_for(lambda: (cli_stack.status(bad_id) or {}).get("state") == "rejected", timeout=30, what="rejection")
    none = cli_stack.call("report", bad_id)
    assert none.returncode == 4 and f"run {bad_id} was rejected, so no task ran" in none.stderr
    assert "none.jsonl" in none.stderr
