"""Names the pipeline derives, in one module: run ids, the finalize message, paths."""
from __future__ import annotations

import azure.functions as func
import pytest

from shared import jobfile, naming
from shared.errors import BatchdropError, JobFileError
from shared.jobfile import CancelRequest, parse_intake_file

LONGEST = naming.run_id_candidates("x" * 80, "intake", "jobs/a.json", '"0x8D"')


def test_jobfile_keeps_its_run_id_names_as_aliases_of_namings():
    assert jobfile.run_id is naming.run_id
    assert jobfile.run_id_candidates is naming.run_id_candidates
    assert jobfile.sanitise_name is naming.sanitise_name
    assert naming.run_id("Café Nov!", "intake", "a.json", "0x1").startswith("cafe-nov-")


def cancel_accepts(text: str) -> bool:
    try:
        return isinstance(parse_intake_file(f'{{"cancel": "{text}"}}'.encode(), blob_name="c.json"), CancelRequest)
    except JobFileError:
        return False


@pytest.mark.parametrize("text", [
    *LONGEST, "heavylift-nov-3f2a9c1e", "a-0123456789abcdef",
    # the old finalize pattern, [a-z0-9-]{1,60}, let these through as run ids
    "not-a-run", "a" * 60, "-", "abc",
    # ... and refused this one, which a cancel request accepts
    "a" * 50 + "-0123456789abcdef",
    "A-0123456789abcdef", "a-0123456789abcdeg", "a_b-0123456789abcdef", "../x-0123456789abcdef",
])
def test_one_run_id_pattern_for_cancel_requests_and_finalize_messages(text):
    accepted = naming.is_run_id(text)
    assert cancel_accepts(text) is accepted
    if accepted:
        assert naming.run_id_of_message(naming.finalize_message(text) + "\n") == text
    else:
        with pytest.raises(BatchdropError):
            naming.run_id_of_message(text)


def test_every_run_id_intake_makes_is_a_valid_finalize_message():
    assert all(naming.is_run_id(r) and len(r) == 57 for r in LONGEST)
    assert naming.is_run_id(naming.run_id("", "intake", ".json", "e"))  # "job-..."


def test_the_finalize_trigger_refuses_a_body_that_is_not_a_run_id(monkeypatch):
    import functions.finalize as trigger

    seen = []
    monkeypatch.setattr(trigger, "context", lambda: "ctx")
    monkeypatch.setattr(trigger, "finalize_run", lambda ctx, run_id: seen.append(run_id))
    for bad in (b"not-a-run", b"a" * 60, b"\xff\xfe"):
        with pytest.raises(BatchdropError):
            trigger.finalize(func.QueueMessage(body=bad))
    trigger.finalize(func.QueueMessage(body=(LONGEST[0] + "\n").encode()))
    assert seen == [LONGEST[0]]


def test_a_prefix_task_keeps_its_own_blobs_extension():
    assert naming.input_file_of_blob("parts/a.csv") == "input.csv"
    assert naming.input_file_of_blob("parts/b.tar.gz") == "input.gz"
    assert naming.input_file_of_blob("parts.d/noext") == "input.bin"
    # a blob name is not validated like the job file, and the name reaches a shell command line
    assert naming.input_file_of_blob('parts/x.$(touch pwned)') == "input.bin"
    assert naming.input_file_of_blob('parts/x.a"b') == "input.bin"
    assert naming.input_file_of_blob("parts/x.") == "input.bin"


def test_paths():
    paths = naming.RunPaths("r-1")
    assert (paths.status, paths.report, paths.error, paths.output("csv"), paths.task_prefix("t000001")) == (
        "r-1/status.json", "r-1/report.json", "r-1/error.json", "r-1/output.csv", "r-1/tasks/t000001/")
    assert naming.task_index("t000012") == 12 and naming.task_index("merge") == -1
    assert naming.shard_name(3, "input.jsonl") == "shards/000003.jsonl"
