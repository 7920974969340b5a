"""Planning a run's Batch job, without services: job spec + pool defaults + task inputs -> job and tasks."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared import batch
from shared.jobfile import parse_job_file
from shared.jobplan import SAS_GRACE, TaskInput, plan_job, plan_merge_task, prefix_inputs, shard_inputs, task_spec
from shared.runs import JobFileVersion, RunRecord
from shared.settings import PoolDefaults
from shared.storage import BlobInfo

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
WORK = ("bd-r-in", "bd-r-out")


@dataclass
class RecordingSigner:
    """Stands in for storage.SasMinter: URLs name what was signed, and every signature is kept."""

    signed: list[tuple[str, str, datetime]] = field(default_factory=list)

    def blob_read_url(self, container: str, name: str, expiry: datetime) -> str:
        self.signed.append((container, name, expiry))
        return f"https://acct/{container}/{name}?sp=r"

    def container_url(self, container: str, permission, expiry: datetime) -> str:
        self.signed.append((container, str(permission), expiry))
        return f"https://acct/{container}?sp={permission}"


def spec(**fields):
    doc = {"command": 'cat "$INPUT_PATH" > "$OUTPUT_PATH"', "input": {"items": [1, 2, 3]}, **fields}
    return parse_job_file(json.dumps(doc).encode(), blob_name="jobs/j.json")


@dataclass(frozen=True)
class Planned:
    job: batch.JobPlan
    tasks: tuple[batch.TaskSpec, ...]
    config: bytes | None


def plan(job, inputs: list[TaskInput], signer=None, defaults=None) -> Planned:
    """The job, and each of its tasks as intake plans them chunk by chunk."""
    signer = signer or RecordingSigner()
    made = plan_job("r-0123456789abcdef", job, defaults or PoolDefaults(), task_count=len(inputs),
                    work_containers=WORK, signer=signer, now=NOW, owner="http://acct/results")
    return Planned(made.job, tuple(task_spec(i, t, signer, made.expiry) for i, t in enumerate(inputs)), made.config)


def test_one_task_per_input_each_reading_only_its_own_blob_until_the_run_must_be_over():
    signer = RecordingSigner()
    job = spec(retries=1, task_timeout_minutes=10, pool={"max_nodes": 2, "slots_per_node": 1})
    submission = plan(job, shard_inputs("bd-r-in", "input.jsonl", 3), signer)
    assert [(t.task_id, t.index, t.input_file) for t in submission.tasks] == [
        ("t000000", 0, "input.jsonl"), ("t000001", 1, "input.jsonl"), ("t000002", 2, "input.jsonl")]
    assert submission.tasks[1].input_url == "https://acct/bd-r-in/shards/000001.jsonl?sp=r"
    job_timeout = batch.job_timeout(3, 2, 1, timedelta(minutes=10))
    assert submission.job.job_timeout == job_timeout and submission.job.task_count == 3
    assert {expiry for _, _, expiry in signer.signed} == {NOW + job_timeout + SAS_GRACE}
    out = submission.job.output_container_url
    assert out.startswith("https://acct/bd-r-out?") and "c" in out and "w" in out and "r" not in out.split("sp=")[1]
    assert submission.config is None and submission.job.config_url is None


def test_prefix_tasks_keep_their_own_blobs_extension():
    blobs = [BlobInfo("data", f"parts/{n}", 1, "e") for n in ("a.csv", "b.jsonl", "c")]
    submission = plan(spec(input={"prefix": "data/parts/"}), prefix_inputs(blobs))
    assert [t.input_file for t in submission.tasks] == ["input.csv", "input.jsonl", "input.bin"]
    assert [batch.task_body(submission.job, t)["resourceFiles"][0]["filePath"] for t in submission.tasks] == \
        ["input.csv", "input.jsonl", "input.bin"]


def test_inline_config_resources_and_pool_defaults():
    job = spec(config={"k": 1}, resources=[{"blob": "data/ref/tools.zip", "unzip": True}])
    submission = plan(job, shard_inputs("bd-r-in", "input.jsonl", 1),
                      defaults=PoolDefaults(vm_size="standard_f2", max_nodes=7, slots_per_node=3))
    assert json.loads(submission.config) == {"k": 1}
    assert submission.job.config_url == "https://acct/bd-r-in/config.json?sp=r"
    assert submission.job.resource_urls == (("https://acct/data/ref/tools.zip?sp=r", "tools.zip", True),)
    assert (submission.job.vm_size, submission.job.max_nodes, submission.job.slots_per_node) == ("standard_f2", 7, 3)
    assert submission.job.pool_id is None and submission.job.owner == "http://acct/results"


def test_config_blob_and_existing_pool():
    submission = plan(spec(config={"blob": "data/cfg.json"}, pool={"id": "mine"}), shard_inputs("bd-r-in", "x.txt", 1))
    assert submission.config is None and submission.job.config_url == "https://acct/data/cfg.json?sp=r"
    assert submission.job.pool_id == "mine"


def test_merge_task_plan():
    job = spec(merge={"command": "sort", "extension": "csv"}, image="python:3.11-slim", task_timeout_minutes=5)
    run = RunRecord.accepted("r-0123456789abcdef", job, JobFileVersion("intake", "jobs/j.json", "1"), None)
    signer = RecordingSigner()
    merge = plan_merge_task(run, "bd-r-out", signer, NOW)
    assert (merge.command, merge.image, merge.output_file, merge.timeout) == (
        "sort", "python:3.11-slim", "output.csv", timedelta(minutes=5))
    assert {expiry for _, _, expiry in signer.signed} == {NOW + timedelta(minutes=5) + SAS_GRACE}


def test_a_spot_pool_falls_back_after_the_settings_wait_from_the_moment_it_is_planned():
    defaults = PoolDefaults(spot_wait_minutes=2.5, spot_preemption_threshold=3)
    job = plan(spec(pool={"spot": True}), shard_inputs("bd-r-in", "input.jsonl", 1), defaults=defaults).job
    assert job.spot and job.fallback == batch.SpotFallback(since=NOW, wait=timedelta(minutes=2.5), preempted=3)
    strict = plan(spec(pool={"spot": True, "spot_fallback": False}), shard_inputs("bd-r-in", "input.jsonl", 1)).job
    assert strict.spot and strict.fallback is None
    assert plan(spec(), shard_inputs("bd-r-in", "input.jsonl", 1)).job.fallback is None


def test_gpus_come_from_the_vm_size_of_the_job_file_or_the_defaults():
    inputs = shard_inputs("bd-r-in", "input.jsonl", 1)
    assert plan(spec(pool={"vm_size": "Standard_NC24s_v3"}), inputs).job.gpus == 4
    assert plan(spec(), inputs, defaults=PoolDefaults(vm_size="Standard_NC4as_T4_v3")).job.gpus == 1
    assert plan(spec(), inputs).job.gpus == 0
    assert plan(spec(pool={"id": "mine"}), inputs).job.gpus == 0  # the user's own pool: its size is not known here
