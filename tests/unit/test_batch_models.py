"""Batch job and task construction (pure): what Azure Batch will be asked to run."""
import shlex
import subprocess
from datetime import timedelta

from shared.batch import JobPlan, TaskSpec, autoscale_formula, job_model, job_timeout, task_model, task_wrapper
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


def test_task_model_limits_retries_and_time_and_uploads_outputs():
    task = task_model(plan(), TaskSpec("t000001", 1, "http://x/in/s?sig=r", "input.jsonl"))
    assert task.constraints.max_task_retry_count == 3
    assert task.constraints.max_wall_clock_time == timedelta(minutes=60)
    patterns = {o.file_pattern: o.upload_options.upload_condition for o in task.output_files}
    assert patterns == {"output/**/*": "taskSuccess", "../std*.txt": "taskFailure"}
    assert task.resource_files[0].file_path == "input.jsonl"
    assert task.container_settings is None
    # the command travels once, in the job's environment, not in each task's body
    assert [e.name for e in task.environment_settings] == ["TASK_INDEX"]
    job = job_model(plan(), PoolDefaults())
    assert {e.name: e.value for e in job.common_environment_settings}["BATCHDROP_COMMAND"] == plan().command


def test_container_task_and_auto_pool_with_autoscale_and_spot():
    p = plan(image="python:3.11-slim", spot=True)
    task = task_model(p, TaskSpec("t000000", 0, "http://x", "input.jsonl"))
    assert task.container_settings.image_name == "python:3.11-slim"
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
    from azure.batch import models as bm

    from shared.batch import _first_line

    message = bm.BatchErrorMessage(lang="en-US", value="The value is invalid: https://a/b?sig=SECRET\nRequestId:1")
    assert _first_line(message) == "The value is invalid: https://a/b?sig=<redacted>"
    assert _first_line(None) == "refused"
