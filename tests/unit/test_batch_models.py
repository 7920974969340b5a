"""Batch job and task construction (pure): what Azure Batch will be asked to run."""
import os
import shlex
import subprocess
from datetime import timedelta

import pytest

from shared.batch import JobPlan, TaskSpec, autoscale_formula, job_model, job_timeout, task_body, task_wrapper
from shared.settings import PoolDefaults


def plan(**kw):
    base = dict(job_id="r-1", run_id="r-1", command='echo "$TASK_INDEX" > "$OUTPUT_PATH"', image=None,
                output_file="output.jsonl", output_container_url="http://x/out?sig=secret", task_count=2,
                retries=3, task_timeout=timedelta(minutes=60), job_timeout=timedelta(hours=3), config_url=None,
                resource_urls=(), pool_id=None, vm_size="standard_d2s_v3", max_nodes=5, spot=False, slots_per_node=2,
                owner="http://acct/results")
    base.update(kw)
    return JobPlan(**base)


def test_wrapper_sets_the_app_contract_and_runs_the_users_command(tmp_path):
    line = task_wrapper(plan(config_url="http://c"), "input.jsonl")
    argv = shlex.split(line)
    assert argv[:2] == ["/bin/sh", "-c"]
    env = {"AZ_BATCH_TASK_WORKING_DIR": str(tmp_path), "TASK_INDEX": "4", "PATH": "/usr/bin:/bin",  # as Batch sets them
           "BATCHDROP_COMMAND": 'echo "$TASK_INDEX $(basename "$INPUT_PATH") $CONFIG_PATH" > "$OUTPUT_PATH"'}
    subprocess.run(argv, env=env, check=True)
    assert (tmp_path / "output" / "output.jsonl").read_text() == f"4 input.jsonl {tmp_path}/config.json\n"


def test_task_body_limits_retries_and_time_and_uploads_outputs():
    task = task_body(plan(), TaskSpec("t000001", 1, "http://x/in/s?sig=r", "input.jsonl"))
    assert task["constraints"] == {"maxTaskRetryCount": 3, "maxWallClockTime": "PT3600S"}
    patterns = {o["filePattern"]: o["uploadOptions"]["uploadCondition"] for o in task["outputFiles"]}
    assert patterns == {"output/**/*": "taskSuccess", "../std*.txt": "taskFailure",
                        "batchdrop-manifest.txt": "taskSuccess"}
    destinations = {o["filePattern"]: o["destination"]["container"]["path"] for o in task["outputFiles"]}
    assert destinations["batchdrop-manifest.txt"] == "manifests/t000001.txt"
    assert {o["destination"]["container"]["containerUrl"] for o in task["outputFiles"]} == {"http://x/out?sig=secret"}
    assert task["resourceFiles"] == [{"httpUrl": "http://x/in/s?sig=r", "filePath": "input.jsonl"}]
    assert "containerSettings" not in task
    # the command travels once, in the job's environment, not in each task's body
    assert task["environmentSettings"] == [{"name": "TASK_INDEX", "value": "1"}]
    job = job_model(plan(), PoolDefaults())
    assert {e.name: e.value for e in job.common_environment_settings}["BATCHDROP_COMMAND"] == plan().command


def test_container_task_and_auto_pool_with_autoscale_and_spot():
    p = plan(image="python:3.11-slim", spot=True)
    task = task_body(p, TaskSpec("t000000", 0, "http://x", "input.jsonl"))
    assert task["containerSettings"]["imageName"] == "python:3.11-slim"
    job = job_model(p, PoolDefaults())
    assert job.all_tasks_complete_mode == "noaction"
    spec = job.pool_info.auto_pool_specification
    assert spec.pool_lifetime_option == "job" and spec.keep_alive is False
    assert spec.pool.enable_auto_scale and "$TargetLowPriorityNodes = min(5" in spec.pool.auto_scale_formula
    assert spec.pool.virtual_machine_configuration.container_configuration.container_image_names == ["python:3.11-slim"]
    assert spec.pool.task_slots_per_node == 2


def test_existing_pool_is_used_as_is():
    job = job_model(plan(pool_id="long-lived"), PoolDefaults())
    assert job.pool_info.pool_id == "long-lived" and job.pool_info.auto_pool_specification is None


def test_autoscale_formula_caps_dedicated_nodes():
    formula = autoscale_formula(20, 4, spot=False, task_count=300)
    assert "$TargetDedicatedNodes = min(20, $wanted);" in formula and "$TargetLowPriorityNodes = 0;" in formula
    # before any sample exists (the evaluation at pool creation) the known task count sizes the pool
    assert "$pending = $sampled ? max(0, $PendingTasks.GetSample(1)) : 300;" in formula


def test_job_timeout_covers_waves_and_retries_but_at_most_a_week():
    assert job_timeout(10, 5, 1, timedelta(minutes=10)) == timedelta(minutes=40) + timedelta(hours=1)
    assert job_timeout(10**6, 1, 3, timedelta(hours=1)) == timedelta(days=7)


class _Response:
    """The least an HttpResponseError needs from a response."""

    def __init__(self, status):
        self.status_code = status
        self.reason = "reason"
        self.headers = {}

    def text(self):
        return ""


def test_batch_errors_are_transient_only_when_a_retry_can_help():
    from azure.core.exceptions import HttpResponseError

    from shared.batch import translate
    from shared.errors import BatchQuotaError

    assert translate(HttpResponseError(response=_Response(503)), "x").transient
    assert translate(HttpResponseError(response=_Response(429)), "x").transient
    assert not translate(HttpResponseError(response=_Response(400)), "x").transient
    quota = HttpResponseError(response=_Response(409))
    quota.error = type("E", (), {"code": "ActiveJobAndScheduleQuotaReached", "message": "quota"})()
    assert isinstance(translate(quota, "creating job"), BatchQuotaError)
    leaky = HttpResponseError(response=_Response(400))
    leaky.error = type("E", (), {"code": "InvalidPropertyValue",
                                 "message": "bad url https://a/b?sv=1&sig=SECRETSIG\nRequestId:123"})()
    text = str(translate(leaky, "adding tasks"))
    assert "SECRETSIG" not in text and "RequestId" not in text and "sig=<redacted>" in text


def test_a_refused_task_names_the_services_first_line_without_secrets():
    """Batch's error message is a {lang, value} object, not a string (reading it as one crashed intake)."""
    from shared.batch import _first_line

    message = {"lang": "en-US", "value": "The value is invalid: https://a/b?sig=SECRET\nRequestId:1"}
    assert _first_line(message) == "The value is invalid: https://a/b?sig=<redacted>"
    assert _first_line(None) == "refused"


# ---------------------------------------------------------------- the wrapper's exit status and output manifest
# These run the command lines with the local /bin/sh, as a Linux node would.


def run_wrapper(wd, command, path="/usr/bin:/bin", line=None):
    line = line or task_wrapper(plan(), "input.jsonl")
    env = {"AZ_BATCH_TASK_WORKING_DIR": str(wd), "TASK_INDEX": "0", "PATH": path, "BATCHDROP_COMMAND": command}
    return subprocess.run(shlex.split(line), env=env, capture_output=True, timeout=30)


def recorded(wd):
    from shared.manifest import parse

    return parse((wd / "batchdrop-manifest.txt").read_bytes())


def test_wrapper_records_every_file_the_command_left_after_a_success(tmp_path):
    import hashlib

    from shared.manifest import ManifestEntry

    command = ('cd "$OUTPUT_DIR" && mkdir -p "sub/deep er" .cache && echo hi > "$OUTPUT_PATH" && '
               'printf "a b" > "with space.txt" && : > "sub/deep er/empty" && printf "%s\\n" \\\\x > sub/back\\\\slash '
               '&& echo hidden > .dotfile && echo hidden > .cache/x && ln -s output.jsonl link')
    done = run_wrapper(tmp_path, command)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "output"
    files = ["output.jsonl", "sub/back\\slash", "sub/deep er/empty", "with space.txt"]  # byte order; no dot names, no link
    assert recorded(tmp_path).entries == tuple(
        ManifestEntry(f, (out / f).stat().st_size, hashlib.sha256((out / f).read_bytes()).hexdigest()) for f in files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batchdrop-manifest.txt", "output"]  # no leftovers

    assert run_wrapper(tmp_path, "true").returncode == 0
    assert recorded(tmp_path).entries == ()  # a retry starts empty: "the task really wrote nothing"


def test_wrapper_passes_the_exit_status_through_and_records_nothing_on_failure(tmp_path):
    (tmp_path / "batchdrop-manifest.txt").write_text("from an earlier try\n")
    for command, code in [("exit 3", 3), ('echo x > "$OUTPUT_PATH"; exit 255', 255), ("kill -KILL $$", 137)]:
        assert run_wrapper(tmp_path, command).returncode == code
        assert not (tmp_path / "batchdrop-manifest.txt").exists()


def test_wrapper_without_sha256sum_records_sizes_only(tmp_path):
    import os
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("find", "wc", "sort", "rm", "mkdir"):  # a minimal image: no sha256sum
        os.symlink(shutil.which(tool), bin_dir / tool)
    wd = tmp_path / "wd"
    wd.mkdir()
    done = run_wrapper(wd, 'printf 12345 > "$OUTPUT_PATH"', path=str(bin_dir))
    assert done.returncode == 0, done.stderr
    assert (wd / "batchdrop-manifest.txt").read_text() == "batchdrop-manifest 1\n5 - output.jsonl\n"


def reference_manifest(out) -> bytes:
    """What the manifest must say about directory `out`, computed here: every regular file (not a link)
    under it, dot names left out, in byte order of the path."""
    import hashlib
    import os

    from shared.manifest import HEADER

    lines = []
    if os.path.islink(out):  # find does not follow a link it starts from
        return HEADER.encode() + b"\n"
    for root, dirs, files in os.walk(out):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = os.path.join(root, name)
            if not name.startswith(".") and not os.path.islink(path):
                rel = os.path.relpath(path, out).encode()
                data = open(path, "rb").read()
                lines.append(b"%d %s %s" % (len(data), hashlib.sha256(data).hexdigest().encode(), rel))
    return b"\n".join([HEADER.encode(), *sorted(lines, key=lambda line: line.split(b" ", 2)[2])]) + b"\n"


@pytest.mark.parametrize("command", [
    'echo hi > "$OUTPUT_PATH"',                      # the common case: one file
    'printf "%s" "a b" > "$OUTPUT_DIR/with space %s.txt"',
    'printf x > "$OUTPUT_DIR/*"', 'printf x > "$OUTPUT_DIR/-n"', 'printf x > "$OUTPUT_DIR/été.txt"',
    'printf x > "$OUTPUT_DIR/tab\there"',           # not printable: the general path
    ": > \"$OUTPUT_PATH\"",                            # an empty file
    "true",                                          # nothing
    'echo x > "$OUTPUT_DIR/.hidden"',                # only a dot name
    'ln -s /etc/hostname "$OUTPUT_DIR/link"',        # only a link
    'mkdir "$OUTPUT_DIR/sub" && echo x > "$OUTPUT_DIR/sub/f"',  # one folder
    'rm -rf "$OUTPUT_DIR"',                          # no OUTPUT_DIR at all
    'd="$AZ_BATCH_TASK_WORKING_DIR/real" && mkdir "$d" && echo x > "$d/f" && rm -rf "$OUTPUT_DIR" && ln -s "$d" "$OUTPUT_DIR"',
    'echo a > "$OUTPUT_DIR/b" && echo b > "$OUTPUT_DIR/a"',    # two files: the general path
])
def test_the_manifest_matches_what_the_output_dir_holds_on_either_path(tmp_path, command):
    """One file or none takes a path without find and sort; the manifest is the same as the general one's."""
    done = run_wrapper(tmp_path, command)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "batchdrop-manifest.txt").read_bytes() == reference_manifest(tmp_path / "output")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in ("output", "real")) == ["batchdrop-manifest.txt"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any folder")
@pytest.mark.parametrize("mode", ["000", "300", "600"])
def test_an_output_dir_the_wrapper_cannot_read_fails_the_task(tmp_path, mode):
    """Not an empty manifest and a success: the general path says it could not list OUTPUT_DIR."""
    done = run_wrapper(tmp_path, f'echo x > "$OUTPUT_PATH" && chmod {mode} "$OUTPUT_DIR"')
    os.chmod(tmp_path / "output", 0o700)
    assert done.returncode == 1 and b"could not list OUTPUT_DIR" in done.stderr


def test_one_output_file_is_recorded_without_find_or_sort(tmp_path):
    """The common case costs a task two processes (wc, sha256sum) instead of five: a node without find
    or sort still records one file, and only more files need them."""
    import os
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("wc", "sha256sum", "rm", "mkdir"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    wd = tmp_path / "wd"
    wd.mkdir()
    done = run_wrapper(wd, 'printf 12345 > "$OUTPUT_PATH"', path=str(bin_dir))
    assert done.returncode == 0, done.stderr
    assert (wd / "batchdrop-manifest.txt").read_bytes() == reference_manifest(wd / "output")
    done = run_wrapper(wd, 'printf 1 > "$OUTPUT_DIR/a"; printf 2 > "$OUTPUT_DIR/b"', path=str(bin_dir))
    assert done.returncode == 1 and b"could not list OUTPUT_DIR" in done.stderr


def test_a_name_with_a_line_break_fails_the_task_saying_why(tmp_path):
    done = run_wrapper(tmp_path, 'mkdir "$OUTPUT_DIR/a\nb" && : > "$OUTPUT_DIR/a\nb/c"')
    assert done.returncode == 1
    assert b"batchdrop: a name in OUTPUT_DIR holds a line break" in done.stderr
    assert not (tmp_path / "batchdrop-manifest.txt").exists()


def test_a_terminate_sent_to_the_wrapper_alone_stops_the_command(tmp_path):
    import os
    import signal
    import time

    env = {"AZ_BATCH_TASK_WORKING_DIR": str(tmp_path), "TASK_INDEX": "0", "PATH": "/usr/bin:/bin",
           "BATCHDROP_COMMAND": 'echo $$ > "$AZ_BATCH_TASK_WORKING_DIR/pid"; exec sleep 60'}
    wrapper = subprocess.Popen(shlex.split(task_wrapper(plan(), "input.jsonl")), env=env)
    pid_file = tmp_path / "pid"
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().endswith("\n")) and time.monotonic() < deadline:
        time.sleep(0.02)
    command_pid = int(pid_file.read_text())
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=10) == 128 + signal.SIGTERM  # the command's own status: killed by TERM
    assert not os.path.exists(f"/proc/{command_pid}")  # reaped by the wrapper, not left running
    assert not (tmp_path / "batchdrop-manifest.txt").exists()


def test_merge_task_records_its_output_dir_and_passes_its_exit_status(tmp_path):
    from shared.batch import MergeTaskPlan, merge_task_body

    merge = merge_task_body(MergeTaskPlan(command="unused", image=None, output_file="output.txt",
                                           outputs_url="http://x/out?sig=r", output_container_url="http://x/out?sig=w",
                                           timeout=timedelta(minutes=5)))
    uploads = {o["filePattern"]: (o["destination"]["container"]["path"], o["uploadOptions"]["uploadCondition"])
               for o in merge["outputFiles"]}
    assert uploads["batchdrop-manifest.txt"] == ("manifests/merge.txt", "taskSuccess")
    done = run_wrapper(tmp_path, 'ls "$OUTPUTS_DIR" > "$OUTPUT_PATH"', line=merge["commandLine"])
    assert done.returncode == 0, done.stderr
    assert [e.path for e in recorded(tmp_path).entries] == ["output.txt"]
    assert run_wrapper(tmp_path, "exit 9", line=merge["commandLine"]).returncode == 9
    assert not (tmp_path / "batchdrop-manifest.txt").exists()


# ---------------------------------------------------------------- spot fallback and GPU pools (issue 13)


def fallback_targets(formula: str, **service: float) -> tuple[int, int]:
    """(dedicated, spot) targets of a formula as the emulator's evaluator computes them (the service's
    variables given lower-case, without $)."""
    from batchemu.autoscale import evaluate

    values, _ = evaluate(formula, {f"${k}": v for k, v in service.items()})
    return values["dedicated"], values["lowPriority"]


def test_spot_fallback_formula_asks_for_spot_until_the_wait_is_over_then_for_dedicated_nodes():
    from datetime import UTC, datetime

    from shared.batch import SpotFallback

    now = datetime.now(UTC)
    young = autoscale_formula(4, 1, True, 3, SpotFallback(now, timedelta(minutes=15), 2))
    old = autoscale_formula(4, 1, True, 3, SpotFallback(now - timedelta(minutes=16), timedelta(minutes=15), 2))
    start = dict(pendingtasks=3, currentlowprioritynodes=0, preemptednodecount=0, targetdedicatednodes=0)
    assert fallback_targets(young, **start) == (0, 3)
    assert fallback_targets(old, **start) == (3, 0)  # no spot node came in 15 minutes
    assert fallback_targets(old, **{**start, "currentlowprioritynodes": 1}) == (2, 1)  # keeps the spot node it got
    assert fallback_targets(old, **{**start, "currentlowprioritynodes": 3}) == (0, 3)  # all there: nothing to do
    # preemptions: 2 spot nodes preempted at once (the threshold) -> dedicated nodes replace them at once
    running = {**start, "currentlowprioritynodes": 3}
    assert fallback_targets(young, **{**running, "preemptednodecount": 1}) == (0, 3)
    assert fallback_targets(young, **{**running, "preemptednodecount": 2}) == (2, 1)
    # the only memory a formula has is the targets it set: a dedicated target keeps the pool falling back
    assert fallback_targets(young, **{**running, "currentlowprioritynodes": 1, "targetdedicatednodes": 2}) == (2, 1)
    # never more than max_nodes in all, and nothing once no task is pending
    assert fallback_targets(old, **{**start, "pendingtasks": 50}) == (4, 0)
    assert fallback_targets(old, **{**start, "pendingtasks": 0, "targetdedicatednodes": 3}) == (0, 0)


def test_the_fallback_formula_names_the_pools_creation_time_and_the_wait():
    from datetime import UTC, datetime

    from shared.batch import SpotFallback

    formula = autoscale_formula(2, 1, True, 1, SpotFallback(datetime(2026, 12, 1, 9, 30, 15, 999, tzinfo=UTC),
                                                             timedelta(seconds=3), 1))
    assert 'time() - time("2026-12-01T09:30:15Z") > 0.05 * TimeInterval_Minute' in formula
    assert "$PreemptedNodeCount.GetSample(TimeInterval_Minute * 5)" in formula
    # without fallback, a spot pool asks for spot nodes only, as before
    assert "$TargetDedicatedNodes = 0;" in autoscale_formula(2, 1, True, 1)


def test_a_gpu_pool_runs_on_the_gpu_image_with_gpu_access_and_says_how_many():
    defaults = PoolDefaults(image_offer="plain-os", gpu_image_offer="ubuntu-hpc", gpu_image_sku="2204")
    p = plan(image="cuda:12", vm_size="Standard_NC12s_v3", gpus=2)
    job = job_model(p, defaults)
    vm = job.pool_info.auto_pool_specification.pool.virtual_machine_configuration
    assert (vm.image_reference.offer, vm.image_reference.sku) == ("ubuntu-hpc", "2204")
    assert vm.node_agent_sku_id == defaults.gpu_node_agent_sku_id
    assert {e.name: e.value for e in job.common_environment_settings}["TASK_GPUS"] == "2"
    task = task_body(p, TaskSpec("t000000", 0, "http://x", "input.jsonl"))
    assert task["containerSettings"]["containerRunOptions"] == "--rm --gpus all"
    cpu = job_model(plan(image="app:1"), defaults)
    assert cpu.pool_info.auto_pool_specification.pool.virtual_machine_configuration.image_reference.offer == "plain-os"
    assert {e.name: e.value for e in cpu.common_environment_settings}["TASK_GPUS"] == "0"
    assert task_body(plan(image="app:1"), TaskSpec("t0", 0, "http://x", "i"))["containerSettings"][
        "containerRunOptions"] == "--rm"
