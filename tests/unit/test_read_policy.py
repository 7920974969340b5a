"""Which containers a job file may read: DATA_CONTAINER and INPUT_CONTAINERS, never the pipeline's own."""
from __future__ import annotations

import json

import pytest

from shared.errors import JobFileError
from shared.jobfile import (
    BlobRef,
    CancelRequest,
    JobSpec,
    ReadPolicy,
    check_readable,
    parse_intake_file,
    parse_job_file,
)
from shared.settings import Settings

BASE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "BATCH_ACCOUNT_URL": "http://127.0.0.1:10100"}


def policy(**env: str) -> ReadPolicy:
    return ReadPolicy.from_settings(Settings.from_mapping({**BASE, **env}))


def job(**fields: object) -> bytes:
    return json.dumps({"command": "python3 app.py", "input": {"items": [1]}, **fields}).encode()


def refused(raw: bytes, read: ReadPolicy) -> JobFileError:
    with pytest.raises(JobFileError) as e:
        parse_intake_file(raw, blob_name="jobs/a.json", policy=read)
    return e.value


def test_from_settings():
    read = policy(INPUT_CONTAINERS="refs, shared-in", WORK_CONTAINER_PREFIX="wk")
    assert read.allowed == {"data", "refs", "shared-in"}
    assert read.forbidden == {"intake", "results", "batchdrop-runs"}
    assert read.forbidden_prefixes == ("wk-", "azure-webjobs-", "$")


@pytest.mark.parametrize("fields, path", [
    ({"input": {"blob": "intake/other-job.json"}}, "input.blob"),
    ({"input": {"prefix": "results/"}}, "input.prefix"),
    ({"input": {"prefix": "batchdrop-runs"}}, "input.prefix"),
    ({"config": {"blob": "bd-someone-1234abcd-out/x.json"}}, "config.blob"),
    ({"resources": [{"blob": "data/a.txt"}, {"blob": "azure-webjobs-secrets/host.json"}]}, "resources[1].blob"),
    ({"resources": [{"blob": "elsewhere/a.txt"}]}, "resources[0].blob"),
])
def test_only_data_is_readable_by_default(fields, path):
    e = refused(job(**fields), policy())
    assert e.field == path
    assert "is not readable by a job file; put inputs in 'data'" in e.message
    assert "INPUT_CONTAINERS" in e.message


def test_the_documented_message():
    e = refused(job(input={"blob": "intake/x.jsonl"}), policy())
    assert e.message == ("container 'intake' is not readable by a job file; put inputs in 'data' "
                         "(or a container listed in the INPUT_CONTAINERS setting)")


def test_data_and_input_containers_are_readable():
    read = policy(INPUT_CONTAINERS="refs")
    spec = parse_intake_file(job(input={"prefix": "data/parts/"}, config={"blob": "refs/c.json"},
                                 resources=[{"blob": "refs/r.zip", "unzip": True}]),
                             blob_name="jobs/a.json", policy=read)
    assert isinstance(spec, JobSpec)
    e = refused(job(input={"blob": "other/x.jsonl"}), read)
    assert "'data' or 'refs'" in e.message


@pytest.mark.parametrize("listed", ["intake", "results", "batchdrop-runs", "bd-x-1234abcd-in", "azure-webjobs-hosts"])
def test_forbidden_wins_over_the_settings(listed):
    read = policy(INPUT_CONTAINERS=listed)
    assert listed in read.allowed
    e = refused(job(input={"blob": f"{listed}/x.jsonl"}), read)
    assert e.field == "input.blob" and f"container {listed!r} is not readable" in e.message
    assert listed not in e.message.split(";", 1)[1]  # never suggested as a place for inputs


def test_forbidden_follows_renamed_pipeline_containers():
    read = policy(INTAKE_CONTAINER="drop", RESULTS_CONTAINER="out", CONTROL_CONTAINER="ctl",
                  WORK_CONTAINER_PREFIX="wk", INPUT_CONTAINERS="intake,results")
    for container in ("drop", "out", "ctl", "wk-run-1234abcd-in"):
        with pytest.raises(JobFileError):
            read.check(BlobRef(container, "x"), "input.blob")
    read.check(BlobRef("intake", "x"), "input.blob")  # not the pipeline's here: listed, so readable


def test_a_deployment_whose_data_container_is_forbidden_says_so():
    read = policy(DATA_CONTAINER="intake")
    e = refused(job(input={"blob": "intake/x.jsonl"}), read)
    assert "no container is readable" in e.message and "DATA_CONTAINER" in e.message


def test_policy_runs_after_parsing_so_field_errors_come_first():
    e = refused(job(input={"blob": "intake/x.jsonl"}, retries=-1), policy())
    assert e.field == "retries"


def test_check_readable_walks_every_reference_in_order():
    spec = parse_job_file(job(input={"blob": "data/x.jsonl"}, config={"blob": "data/c.json"},
                              resources=[{"blob": "data/r.txt"}]), blob_name="a.json")
    check_readable(spec, policy())
    narrow = ReadPolicy(allowed=frozenset({"data"}), forbidden=frozenset(), forbidden_prefixes=())
    check_readable(spec, narrow)
    nothing = ReadPolicy(allowed=frozenset(), forbidden=frozenset(), forbidden_prefixes=())
    with pytest.raises(JobFileError) as e:
        check_readable(spec, nothing)
    assert e.value.field == "input.blob"


def test_without_a_policy_nothing_changes_and_cancel_requests_are_not_blob_reads():
    assert isinstance(parse_job_file(job(input={"blob": "intake/x.jsonl"}), blob_name="a.json"), JobSpec)
    assert parse_intake_file(b'{"cancel": "a-1234abcd1234abcd"}', blob_name="c.json", policy=policy()) == \
        CancelRequest("a-1234abcd1234abcd")


def test_parse_job_file_takes_the_policy_too():
    with pytest.raises(JobFileError) as e:
        parse_job_file(job(resources=[{"blob": "results/r.txt"}]), blob_name="a.json", policy=policy())
    assert e.value.field == "resources[0].blob"
