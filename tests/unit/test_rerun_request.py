"""Rerun requests dropped into intake ({"rerun": "<run id>", ...overrides}), and what the record and
the report keep of a rerun (pure parts; whole reruns are in tests/pipeline/test_rerun.py)."""
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import JobFileError
from shared.jobfile import RerunRequest, parse_intake_file, parse_job_file
from shared.report import reused_outcome
from shared.rerun import skipped
from shared.runs import CANCELLED, MERGING, RUNNING, RunRecord

RUN = "heavylift-nov-3f2a9c1e5b7d9f01"


def test_a_rerun_request_names_a_run_and_its_overrides():
    raw = f'{{"rerun": "{RUN}", "command": "true", "retries": 2, "task_timeout_minutes": 5}}'.encode()
    assert parse_intake_file(raw, blob_name="x.json") == \
        RerunRequest(RUN, {"command": "true", "retries": 2, "task_timeout_minutes": 5})
    assert parse_intake_file(f'{{"rerun": "{RUN}"}}'.encode(), blob_name="x.json") == RerunRequest(RUN, {})


@pytest.mark.parametrize("raw, field, says", [
    (f'{{"rerun": "{RUN}", "input": {{"items": [1]}}}}', "input", "only"),
    (f'{{"rerun": "{RUN}", "name": "other"}}', "name", "only"),
    ('{"rerun": 7}', "rerun", "id of a run"),
    ('{"rerun": "not a run id"}', "rerun", "id of a run"),
    ('{"rerun": "../x-1234abcd"}', "rerun", "id of a run"),
    (f'{{"rerun": "{RUN}", "rerun": "{RUN}"}}', "rerun", "more than once"),
])
def test_bad_rerun_requests_name_the_field(raw, field, says):
    with pytest.raises(JobFileError) as e:
        parse_intake_file(raw.encode(), blob_name="x.json")
    assert e.value.field == field and says in str(e.value)


def test_parse_job_file_refuses_a_rerun_request():
    with pytest.raises(JobFileError, match="rerun request"):
        parse_job_file(f'{{"rerun": "{RUN}"}}'.encode(), blob_name="x.json")


def test_a_rerun_skips_the_indices_of_the_reused_tasks():
    assert skipped({"t000001": "a-1234abcd", "t000004": "b-1234abcd"}) == frozenset({1, 4})


def test_rerun_fields_and_the_time_outputs_are_kept_survive_status_json():
    now = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    run = RunRecord._new(dict(run_id="r-1234abcd", state=RUNNING)).rerunning(RUN, {"t000000": RUN})
    ended = run.ended(CANCELLED, "cancelled by x", frozenset({RUNNING}), now + timedelta(hours=72))
    assert ended is not None
    again = RunRecord.from_json(ended.to_json())
    assert again.rerun_of == RUN and again.reused == {"t000000": RUN}
    assert ended.to_json()["outputs_kept_until"] == "2026-12-06T10:00:00Z"
    assert again.outputs_kept(now + timedelta(hours=71)) and not again.outputs_kept(now + timedelta(hours=72))
    merging = RunRecord._new(dict(run_id="m-1234abcd", state=MERGING))
    report = {"state": "succeeded", "tasks": {"total": 2, "succeeded": 2, "failed": 0}}
    assert "outputs_kept_until" not in merging.finished(report, now).to_json()


def test_a_reused_task_is_a_success_marked_with_the_run_that_made_its_output():
    entry = reused_outcome("t000003", RUN).as_report()
    assert entry["outcome"] == "succeeded" and entry["index"] == 3 and entry["reused_from"] == RUN
