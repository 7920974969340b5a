"""Every `batchdrop` command against the real local stack (Azurite, the Batch emulator and the
function app under devhost), run as a user runs it: the installed console script, output to
pipes (so the one-line-per-change form), exit codes checked."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.services import wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "heavylift"
pytestmark = pytest.mark.e2e


def job(tmp_path: Path, name: str, doc: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_quick_start_upload_submit_wait_results(cli_stack, tmp_path):
    """The README's quick start: upload the example app, submit the example job file with a local
    input, wait for it, download its results."""
    up = cli_stack.run("upload", str(EXAMPLE), "data/heavylift/app.zip")
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == "data/heavylift/app.zip"

    sub = cli_stack.run("submit", str(EXAMPLE / "jobs" / "heavylift-blob.json"),
                        "--input", str(EXAMPLE / "data" / "texts.jsonl"), "--wait", "--interval", "0.5")
    assert sub.returncode == 0, (sub.stdout, sub.stderr, cli_stack.devhost_log())
    lines = sub.stdout.splitlines()
    run_id = lines[0]
    assert re.fullmatch(r"heavylift-demo-[0-9a-f]{16}", run_id)
    status = cli_stack.status(run_id)
    assert status["state"] == "succeeded"
    assert status["job_file"].startswith(f"{cli_stack.settings.intake_container}/")
    # one line per change, no terminal drawing, ending with the result
    assert "\x1b[" not in sub.stdout
    progress = [line for line in lines if " tasks done, " in line]
    assert progress and "succeeded" in progress[-1] and "10/10 tasks done" in progress[-1]
    assert f"run {run_id} succeeded: 10/10 tasks" in sub.stdout
    assert f"output:   {cli_stack.settings.results_container}/{run_id}/output.jsonl" in sub.stdout
    assert "uploading" in sub.stderr and "texts.jsonl" in sub.stderr

    out = tmp_path / "out"
    res = cli_stack.run("results", run_id, "-o", str(out))
    assert res.returncode == 0, res.stderr
    source = [json.loads(x)["id"] for x in (EXAMPLE / "data" / "texts.jsonl").read_text().splitlines()]
    merged = [json.loads(x) for x in (out / "output.jsonl").read_text().splitlines()]
    assert [r["id"] for r in merged] == source
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"]["succeeded"] == 10 and report["output_bytes"] == (out / "output.jsonl").stat().st_size
    assert json.loads((out / "status.json").read_text())["state"] == "succeeded"
    assert not list(out.rglob("*.partial"))

    again = cli_stack.call("results", run_id, "-o", str(out))
    assert again.returncode == 6 and "not overwriting" in again.stderr and "--force" in again.stderr
    forced = cli_stack.call("results", run_id, "-o", str(out), "--force")
    assert forced.returncode == 0, forced.stderr


def drop_raw(cli_stack, name: str, raw: bytes) -> None:
    """A job file put into intake directly (as any storage tool would), bypassing the CLI."""
    cli_stack.service.get_blob_client(cli_stack.settings.intake_container, name).upload_blob(raw, overwrite=True)


def rejection_for(cli_stack, name: str, raw: bytes) -> dict:
    """error.json the real intake writes for these bytes dropped as intake/<name>."""
    drop_raw(cli_stack, name, raw)
    from shared import jobfile

    props = cli_stack.service.get_blob_client(cli_stack.settings.intake_container, name).get_blob_properties()
    run_id = jobfile.run_id(jobfile.sanitise_name(jobfile.default_name(name)), cli_stack.settings.intake_container,
                            name, props.etag)
    wait_for(lambda: (cli_stack.status(run_id) or {}).get("state") == "rejected", timeout=30,
             what=f"rejection of {name}")
    return cli_stack.results_json(run_id, "error.json")


def intake_names(cli_stack) -> set[str]:
    container = cli_stack.service.get_container_client(cli_stack.settings.intake_container)
    return {b.name for b in container.list_blobs()}


CASES = {
    "typo": b'{"comand": "true", "input": {"items": [1]}}',
    "unreadable": b'{"command": "true", "input": {"blob": "RESULTS/x.jsonl"}}',
    "not-json": b'{"command": "true", "input": {"items": [1,]}}',
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_and_submit_say_what_intake_says(cli_stack, tmp_path, case):
    """validate: exit 2 and the very message the real intake puts in error.json; submit refuses
    the file the same way and drops nothing."""
    raw = CASES[case].replace(b"RESULTS", cli_stack.settings.results_container.encode())
    error = rejection_for(cli_stack, f"validate-{case}.json", raw)
    path = tmp_path / f"validate-{case}.json"
    path.write_bytes(raw)

    checked = cli_stack.call("validate", str(path))
    assert checked.returncode == 2, checked
    assert error["error"] in checked.stderr.splitlines()

    before = intake_names(cli_stack)
    refused = cli_stack.call("submit", str(path))
    assert refused.returncode == 2 and error["error"] in refused.stderr.splitlines()
    assert refused.stdout == "" and intake_names(cli_stack) == before


def test_validate_offline_json_and_several_files(cli_stack, tmp_path):
    raw = CASES["typo"]
    error = rejection_for(cli_stack, "validate-json.json", raw)
    bad = tmp_path / "bad.json"
    bad.write_bytes(raw)
    # offline: storage here is a closed port, and nothing asks it
    dead = tmp_path / "dead.settings.json"
    dead.write_text(json.dumps({"Values": {**cli_stack.values, "AzureWebJobsStorage": _dead_storage()}}))
    examples = sorted(str(p) for p in (EXAMPLE / "jobs").glob("*.json"))
    result = cli_stack.call("validate", "--json", *examples, str(bad), settings=dead)
    assert result.returncode == 2, result
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["valid"] for d in docs] == [True] * len(examples) + [False]
    assert (docs[-1]["field"], docs[-1]["message"], docs[-1]["error"]) == (error["field"], error["message"],
                                                                        error["error"])
    plain = cli_stack.call("validate", *examples)
    assert plain.returncode == 0, plain.stderr
    assert [line.split(" is a valid job file")[0] for line in plain.stdout.splitlines()] == \
        [f"ok: {p}" for p in examples]


def _dead_storage() -> str:
    from tests.services import AZURITE_ACCOUNT, AZURITE_KEY, free_port

    port = free_port()
    return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};QueueEndpoint=http://127.0.0.1:{port}/q;")


def test_no_storage_says_which_endpoint_and_how_to_configure(cli_stack, tmp_path):
    dead = tmp_path / "dead.settings.json"
    storage = _dead_storage()
    dead.write_text(json.dumps({"Values": {**cli_stack.values, "AzureWebJobsStorage": storage}}))
    endpoint = re.search(r"BlobEndpoint=([^;]+)", storage).group(1)
    env = cli_stack.env(BATCHDROP_SETTINGS=str(dead))
    for args in (["runs"], ["status", "some-run-0123456789abcdef"], ["watch", "some-run-0123456789abcdef"]):
        # the installed command once; the same code in this process for the others
        result = cli_stack.run(*args, env=env) if args == ["runs"] else cli_stack.call(*args, settings=dead)
        assert result.returncode == 5, (args, result)
        assert f"cannot reach blob storage at {endpoint}" in result.stderr
        assert "make up" in result.stderr and "--account" in result.stderr and str(dead) in result.stderr
        assert "Traceback" not in result.stderr and "AccountKey" not in result.stderr
    debug = cli_stack.run("runs", "--debug", env=env)
    assert debug.returncode == 5 and "Traceback" in debug.stderr

    missing = cli_stack.call("runs", settings=tmp_path / "nope.json")
    assert missing.returncode == 5 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_help_lists_every_exit_code(cli_stack):
    from batchdrop_cli.errors import EXIT_CODES

    top = cli_stack.run("--help")
    assert top.returncode == 0
    readme = (ROOT / "README.md").read_text()
    for code, meaning in EXIT_CODES:
        assert re.search(rf"^\s*{code}\s+{re.escape(meaning[:30])}", top.stdout, re.MULTILINE), code
        assert f"| {code} | {meaning} |" in readme, code
    for command in ("validate", "submit", "upload", "watch", "status", "runs", "logs", "results", "cancel"):
        sub = cli_stack.call(command, "--help")
        assert sub.returncode == 0 and "Usage: batchdrop " + command in sub.stdout
    assert cli_stack.call("watch").returncode == 2  # usage error: RUN missing


def submit(cli_stack, tmp_path, name: str, doc: dict, *args: str) -> str:
    """`batchdrop submit` (no wait); returns the run id it printed."""
    result = cli_stack.call("submit", str(job(tmp_path, name, doc)), *args)
    assert result.returncode == 0, result
    return result.stdout.splitlines()[0]


def test_failed_run_watch_logs_status_results(cli_stack, tmp_path):
    """A run whose task fails: exit 1 everywhere the run's end counts, and the failed task's
    captured stdout/stderr through `logs`."""
    failing = {"name": "cli-fails", "command": 'echo "out $TASK_INDEX"; echo "err $TASK_INDEX" >&2; '
                                              'test "$TASK_INDEX" -ne 1',
               "input": {"items": [1, 2, 3]}, "retries": 0, "on_task_failure": "partial"}
    waited = cli_stack.call("submit", str(job(tmp_path, "fails.json", failing)), "--wait", "--interval", "0.5")
    run_id = waited.stdout.splitlines()[0]
    # partial: the run succeeds with the two good tasks (exit 0), and says what failed
    assert waited.returncode == 0, (waited, cli_stack.devhost_log())
    assert "warning:  partial result: 1 task(s) did not succeed" in waited.stdout

    failing.update(name="cli-fails-hard", on_task_failure="fail")
    hard = cli_stack.call("submit", str(job(tmp_path, "fails-hard.json", failing)), "--wait", "--interval", "0.5")
    hard_id = hard.stdout.splitlines()[0]
    assert hard.returncode == 1, (hard, cli_stack.devhost_log())
    assert f"run {hard_id} failed" in hard.stdout and "t000001 (exit code 1" in hard.stdout
    assert f"batchdrop logs {hard_id}" in hard.stdout

    watched = cli_stack.call("watch", hard_id)
    assert watched.returncode == 1 and f"run {hard_id} failed" in watched.stdout

    logs = cli_stack.call("logs", run_id)
    assert logs.returncode == 0, logs
    assert logs.stdout == ("==> task t000001 (exit code 1, FailureExitCode) <==\n"
                           "--- stdout ---\nout 1\n--- stderr ---\nerr 1\n")
    hard_logs = cli_stack.call("logs", hard_id)  # t000002 may have been stopped: listed, not shown
    assert hard_logs.returncode == 0 and "==> task t000001 (exit code 1" in hard_logs.stdout
    assert "t000000" not in hard_logs.stdout
    only = cli_stack.call("logs", hard_id, "t000001", "--stderr")
    assert only.returncode == 0 and only.stdout == "err 1\n"
    kept = cli_stack.call("logs", hard_id, "t000000")  # succeeded: nothing kept, and its job is gone from Batch
    assert kept.returncode == 4 and "no output of task 't000000'" in kept.stderr
    good = cli_stack.call("logs", cli_stack_success(cli_stack))
    assert good.returncode == 0 and "no task failed" in good.stderr

    shown = cli_stack.call("status", hard_id)
    assert shown.returncode == 0
    assert re.search(r"^state\s+failed$", shown.stdout, re.MULTILINE)
    assert re.search(r"^error\s+.*t000001", shown.stdout, re.MULTILINE)
    assert json.loads(cli_stack.call("status", hard_id, "--json").stdout) == cli_stack.status(hard_id)

    out = tmp_path / "failed"
    fetched = cli_stack.call("results", hard_id, "-o", str(out))
    assert fetched.returncode == 1, fetched
    assert (out / "tasks" / "t000001" / "stderr.txt").read_text() == "err 1\n"
    assert json.loads((out / "error.json").read_text())["state"] == "failed"
    assert json.loads((out / "report.json").read_text())["state"] == "failed"
    assert not list(out.glob("output.*"))


def cli_stack_success(cli_stack) -> str:
    """A succeeded run of this session (the quick start's, or another)."""
    runs = json.loads(cli_stack.call("runs", "--json", "--state", "succeeded").stdout)
    clean = [r["run_id"] for r in runs if not r["tasks"]["failed"]]
    assert clean, "no run without failures yet"
    return clean[0]


def test_rejected_run_exits_3_with_error_json_message(cli_stack, tmp_path):
    missing = {"name": "cli-missing", "command": "true", "input": {"blob": "data/nowhere/none.jsonl"}}
    result = cli_stack.call("submit", str(job(tmp_path, "missing.json", missing)), "--wait", "--interval", "0.5")
    run_id = result.stdout.splitlines()[0]
    assert result.returncode == 3, (result, cli_stack.devhost_log())
    error = cli_stack.results_json(run_id, "error.json")
    assert error["field"] == "input.blob"
    assert f"run {run_id} rejected" in result.stdout and error["error"] in result.stdout
    logs = cli_stack.call("logs", run_id)
    assert logs.returncode == 4 and "rejected" in logs.stderr


def test_a_deployment_stricter_than_the_local_settings_is_still_followed(cli_stack, tmp_path):
    """Settings that let a job file through which the deployment refuses: intake then names the
    run after the job file's blob name, and submit --wait finds it there."""
    lenient = tmp_path / "lenient.settings.json"
    lenient.write_text(json.dumps({"Values": {**cli_stack.values, "INPUT_CONTAINERS": "elsewhere"}}))
    doc = {"name": "cli-lenient", "command": "true", "input": {"blob": "elsewhere/x.jsonl"}}
    result = cli_stack.call("submit", str(job(tmp_path, "strict.json", doc)), "--wait", "--interval", "0.3",
                            "--timeout", "60", settings=lenient)
    assert result.returncode == 3, (result, cli_stack.devhost_log())
    printed, *_ = result.stdout.splitlines()
    assert printed.startswith("cli-lenient-")  # what intake would name it had it read the file as we did
    assert re.search(r"run strict-[0-9a-f]{16} rejected .*input\.blob: container 'elsewhere' is not readable",
                     result.stdout)


def test_runs_lists_newest_first_and_unknown_ids_get_suggestions(cli_stack, tmp_path):
    first = submit(cli_stack, tmp_path, "list-a.json", {"name": "cli-list", "command": "true",
                                                        "input": {"items": [1]}})
    second = submit(cli_stack, tmp_path, "list-b.json", {"name": "cli-list", "command": "true",
                                                         "input": {"items": [1]}})
    for run_id in (first, second):
        wait_for(lambda r=run_id: (cli_stack.status(r) or {}).get("state") == "succeeded", timeout=60,
                 what=f"{run_id} to succeed")
    listed = json.loads(cli_stack.call("runs", "--json", "--since", "1h").stdout)
    ids = [r["run_id"] for r in listed]
    assert first in ids and second in ids
    created = [r["created_at"] for r in listed]
    assert created == sorted(created, reverse=True)

    table = cli_stack.call("runs", "--state", "succeeded")
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["run", "state", "tasks", "started", "duration"]
    row = next(r for r in rows if r.startswith(second))
    assert row.split()[1:3] == ["succeeded", "1/1"]
    assert not any(" failed " in r for r in rows)
    assert "no runs matching" in cli_stack.call("runs", "--state", "merging", "--since", "1s").stdout

    typo = second[:-3] + "xyz"
    unknown = cli_stack.call("status", typo)
    assert unknown.returncode == 4
    assert f"unknown run id '{typo}'" in unknown.stderr and "closest runs:" in unknown.stderr
    assert f"{second} (succeeded)" in unknown.stderr and "Traceback" not in unknown.stderr
    for command in ("watch", "cancel"):
        assert cli_stack.call(command, typo).returncode == 4, command


def test_rerun_runs_the_failed_task_again_with_a_fixed_command(cli_stack, tmp_path):
    """`batchdrop rerun RUN --command ... --wait`: a new run, printed, in which only the failed task
    runs and whose output is the whole job's, in task order."""
    flaky = {"name": "cli-flaky", "command": 'test "$TASK_INDEX" -ne 1 && cat "$INPUT_PATH" > "$OUTPUT_PATH"',
             "input": {"items": [1, 2, 3]}, "retries": 0, "on_task_failure": "partial"}
    first = cli_stack.call("submit", str(job(tmp_path, "flaky.json", flaky)), "--wait", "--interval", "0.5")
    run_id = first.stdout.splitlines()[0]
    assert first.returncode == 0 and "partial result" in first.stdout, (first, cli_stack.devhost_log())

    again = cli_stack.call("rerun", run_id, "--command", 'cat "$INPUT_PATH" > "$OUTPUT_PATH"', "--wait",
                           "--interval", "0.5")
    new_id = again.stdout.splitlines()[0]
    assert again.returncode == 0, (again, cli_stack.devhost_log())
    assert new_id != run_id and new_id.startswith("cli-flaky-") and f"rerun of {run_id}" in again.stderr
    status = cli_stack.status(new_id)
    assert status["state"] == "succeeded" and status["rerun_of"] == run_id
    assert status["reused"] == {"t000000": run_id, "t000002": run_id}
    out = tmp_path / "rerun"
    assert cli_stack.call("results", new_id, "-o", str(out)).returncode == 0
    assert (out / "output.jsonl").read_text() == "1\n2\n3\n"

    nothing = cli_stack.call("rerun", "nothing-0123abcd0123abcd")
    assert nothing.returncode == 4, nothing
