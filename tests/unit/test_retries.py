"""Which failures are the infrastructure's, and the retry plan across monitor ticks (pure)."""
from datetime import UTC, datetime, timedelta

from shared.retries import FailedTask, backoff, is_infrastructure, plan

T = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
DOWNLOAD = {"category": "ServerError", "code": "BlobDownloadMiscError"}
UPLOAD = {"category": "UserError", "code": "FileUploadMiscError"}


def test_transfer_and_server_errors_are_infrastructure_user_errors_are_not():
    assert is_infrastructure(DOWNLOAD) and is_infrastructure(UPLOAD)
    assert is_infrastructure({"category": "servererror", "code": "Anything"})
    for user in ({"category": "UserError", "code": "BlobNotFound"}, {"category": "UserError", "code": "BlobAccessDenied"},
                 {"category": "UserError", "code": "FailureExitCode"}, None, {}):
        assert not is_infrastructure(user), user


def test_a_command_that_exited_non_zero_failed_by_itself_whatever_its_uploads_did():
    assert not is_infrastructure(UPLOAD, exit_code=3)
    assert is_infrastructure(UPLOAD, exit_code=0) and is_infrastructure(DOWNLOAD, exit_code=None)
    assert plan([FailedTask("t000001", UPLOAD, 3)], {}, {}, T, budget=3).final == ("t000001",)


def test_backoff_doubles_and_is_capped():
    assert [backoff(n).total_seconds() for n in range(6)] == [10, 20, 40, 80, 120, 120]


def test_a_new_infrastructure_failure_waits_then_is_reactivated_and_counted():
    first = plan([FailedTask("t000001", DOWNLOAD)], {}, {}, T, budget=3)
    assert first.reactivate == () and first.final == () and first.used == {}
    assert first.waiting == {"t000001": T + timedelta(seconds=10)}
    early = plan([FailedTask("t000001", DOWNLOAD)], first.used, first.waiting, T + timedelta(seconds=5), budget=3)
    assert early.reactivate == () and early.waiting == first.waiting
    due = plan([FailedTask("t000001", DOWNLOAD)], first.used, first.waiting, T + timedelta(seconds=10), budget=3)
    assert due.reactivate == ("t000001",) and due.waiting == {} and due.used == {"t000001": 1}


def test_user_errors_fail_at_once_and_a_spent_budget_is_final():
    failed = [FailedTask("t000000", {"category": "UserError", "code": "FailureExitCode"}),
              FailedTask("t000002", UPLOAD), FailedTask("t000003-r1", DOWNLOAD)]
    out = plan(failed, {"t000002": 3, "t000003": 1}, {}, T, budget=3)
    assert out.final == ("t000000", "t000002")
    assert out.waiting == {"t000003-r1": T + timedelta(seconds=20)}  # a rerun spends its task's budget


def test_budget_zero_turns_infrastructure_retries_off():
    assert plan([FailedTask("t000001", DOWNLOAD)], {}, {}, T, budget=0).final == ("t000001",)
