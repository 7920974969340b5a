"""Cancel requests dropped into intake: {"cancel": "<run id>"} and nothing else."""
import pytest

from shared.errors import JobFileError
from shared.jobfile import CancelRequest, JobSpec, parse_intake_file, parse_job_file, run_id


def test_a_cancel_request_names_a_run():
    assert parse_intake_file(b'{"cancel": "heavylift-nov-3f2a9c1e5b7d9f01"}', blob_name="x.json") == \
        CancelRequest("heavylift-nov-3f2a9c1e5b7d9f01")


def test_runs_made_before_16_hex_ids_can_still_be_cancelled():
    assert parse_intake_file(b'{"cancel": "heavylift-nov-3f2a9c1e"}', blob_name="x.json") == \
        CancelRequest("heavylift-nov-3f2a9c1e")


def test_every_run_id_is_cancellable():
    ident = run_id("x" * 40, "intake", "jobs/a.json", "0x1")
    assert parse_intake_file(f'{{"cancel": "{ident}"}}'.encode(), blob_name="x.json") == CancelRequest(ident)


def test_job_files_still_parse_as_jobs():
    spec = parse_intake_file(b'{"command": "true", "input": {"items": [1]}}', blob_name="x.json")
    assert isinstance(spec, JobSpec)


@pytest.mark.parametrize("raw, field", [
    (b'{"cancel": "heavylift-3f2a9c1e", "command": "true"}', "command"),
    (b'{"cancel": 7}', "cancel"),
    (b'{"cancel": "not a run id"}', "cancel"),
    (b'{"cancel": "x-1234abcd\\n"}', "cancel"),                   # "$" would have let it through
    (b'{"cancel": "x-1234abcd1234abcd\\n"}', "cancel"),
    (b'{"cancel": "x-1234abcd123"}', "cancel"),                   # neither 8 nor 16 hex
    (b'{"cancel": "x-1234ABCD1234ABCD"}', "cancel"),
    (b'{"cancel": "x-1234abcd\\u0000"}', "cancel"),
    (b'{"cancel": "../x-1234abcd"}', "cancel"),
    (b'{"cancel": NaN}', "cancel"),
    (b'{"cancel": "x-1234abcd", "cancel": "y-1234abcd"}', "cancel"),
])
def test_bad_cancel_requests_name_the_field(raw, field):
    with pytest.raises(JobFileError) as e:
        parse_intake_file(raw, blob_name="x.json")
    assert e.value.field == field


def test_parse_job_file_refuses_a_cancel_request():
    with pytest.raises(JobFileError, match="cancel request"):
        parse_job_file(b'{"cancel": "heavylift-3f2a9c1e"}', blob_name="x.json")
