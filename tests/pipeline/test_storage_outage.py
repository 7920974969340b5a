"""Storage outages on the real local stack (issue 15): Azurite is stopped for a few seconds and
started again while tasks transfer and while each pipeline step works.

Azurite persists to a folder here and is stopped with SIGTERM, waiting for its clean exit: it saves
its databases then, so like real Storage it never loses a write it acknowledged (a SIGKILL could).
It comes back on the same ports and folder. The Batch emulator is the test's own: with its transfer
retries off, a blip fails every transfer it meets (what the pipeline's infrastructure retries must
absorb); with them on (its default), it absorbs the blip itself.

The pipeline's storage clients retry each call quickly here (twice, 0.3 s apart) instead of the
SDK's default 15 s, 18 s, 24 s: otherwise a 3-s outage would only stall a step's call until storage
is back, and the steps' own handling of a storage error would never be reached (in Azure, an outage
longer than the SDK's retries reaches it the same way). The monitor and finalize are driven here as
the Functions host runs them: a tick that raises is logged and the next tick comes; a finalize that
raises leaves its message to be delivered again.

Azurite forgets blob leases when it restarts (real Storage keeps them): so here a step that failed
holding its claim (shared.claims) is retried at once, whereas in Azure the claim it could not release
stays leased until it expires and the retry finds the step "busy" until then (the monitor then
re-drives it: tests/pipeline/test_redrive.py). Claims are given the shortest lease, so these tests
would still finish in time should Azurite keep leases one day.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from azure.core.exceptions import AzureError
from azure.storage.blob import LinearRetry

from shared import naming, storage
from shared.accept import accept
from shared.claims import Claims
from shared.cleanup import work_containers
from shared.context import Context
from shared.finalize import finalize
from shared.runs import TERMINAL, utc_now
from shared.watch import REDRIVE_AFTER, watch
from tests.pipeline.helpers import (
    COPY,
    batch_client,
    build_context,
    drop,
    jobs_left,
    put_data,
    results_blob,
    settings_env,
    status,
    wait_for,
    work_containers_left,
)
from tests.services import Azurite, halt_azurite, resume_azurite, start_azurite

OUTAGE_S = 3.0
LEASE_S = 15  # the shortest lease Storage grants: a claim a failed step could not release expires this fast
STORAGE_DOWN = (AzureError, storage.StorageError)  # what a step raises when storage cannot be reached


# ----------------------------------------------------------------------------- services


@pytest.fixture(scope="module")
def store():
    """Azurite on disk, for this module only: it is stopped and started again."""
    service = start_azurite(in_memory=False)
    try:
        yield service
    finally:
        service.stop()


def _emulator(tmp_path_factory, name: str, transfer_retries: int | None):
    from batchemu.process import EmulatorProcess

    emulator = EmulatorProcess(data_dir=tmp_path_factory.mktemp(name), max_concurrency=10,
                               transfer_retries=transfer_retries)
    emulator.start()
    return emulator


@pytest.fixture(scope="module")
def single_try_emulator(tmp_path_factory):
    """Transfer retries off: one attempt per transfer, so a storage blip fails the task at once."""
    emulator = _emulator(tmp_path_factory, "emu-single-try", 0)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def retrying_emulator(tmp_path_factory):
    """The emulator's default: transfers retry transient failures (0.5, 1, 2, 4, 8 s)."""
    emulator = _emulator(tmp_path_factory, "emu-retrying", None)
    try:
        yield emulator
    finally:
        emulator.stop()


class Outage:
    """Stops and restarts the module's Azurite. Also a request hook of the pipeline's storage
    clients: `arm(n, match)` stops Azurite just before the n-th request that `match`es is sent (so a
    step meets the outage at a chosen point of its work, whatever the timing)."""

    def __init__(self, service: Azurite) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._match: Callable[[str, str], bool] | None = None
        self._left = 0
        self.tripped = threading.Event()
        self._restarts: list[threading.Thread] = []

    def stop(self) -> None:
        halt_azurite(self.service)

    def start(self) -> None:
        resume_azurite(self.service)

    def for_seconds(self, seconds: float = OUTAGE_S) -> threading.Thread:
        """Stop Azurite now and start it again `seconds` later (in the background)."""
        self.stop()
        thread = threading.Thread(target=self._restart_after, args=(seconds,), name="azurite-restart")
        self._restarts.append(thread)
        thread.start()
        return thread

    def _restart_after(self, seconds: float) -> None:
        time.sleep(seconds)
        self.start()

    def arm(self, n: int, match: Callable[[str, str], bool]) -> None:
        with self._lock:
            self._match, self._left = match, n
            self.tripped.clear()

    def end(self) -> None:
        """Disarmed, no restart pending, Azurite running."""
        with self._lock:
            self._match = None
        for thread in self._restarts:
            thread.join()
        self.start()

    def hook(self, request) -> None:
        """The storage clients' `raw_request_hook`: called before each request is sent."""
        self._before(request.http_request.method, request.http_request.url)

    def _before(self, method: str, url: str) -> None:
        with self._lock:
            if self._match is None or not self._match(method, url):
                return
            self._left -= 1
            if self._left > 0:
                return
            self._match = None
            self.stop()  # under the lock: requests of other threads wait, then meet a stopped Azurite
            self.tripped.set()


@pytest.fixture
def outage(store, monkeypatch):
    """Azurite is left running whatever the test did."""
    control = Outage(store)
    fast = dict(retry_policy=LinearRetry(backoff=0.3, random_jitter_range=0, retry_total=2),
                raw_request_hook=control.hook)

    class Blobs(storage.BlobServiceClient):
        @classmethod
        def from_connection_string(cls, conn_str, credential=None, **kwargs):
            return super().from_connection_string(conn_str, credential, **{**fast, **kwargs})

    class Queues(storage.QueueServiceClient):
        @classmethod
        def from_connection_string(cls, conn_str, credential=None, **kwargs):
            return super().from_connection_string(conn_str, credential, **{**fast, **kwargs})

    monkeypatch.setattr(storage, "BlobServiceClient", Blobs)
    monkeypatch.setattr(storage, "QueueServiceClient", Queues)
    try:
        yield control
    finally:
        control.end()


def make_context(store, emulator, **kwargs) -> Context:
    ctx = build_context(settings_env(store, emulator), **kwargs)
    # a claim a step could not release (storage was down) expires by itself, here within LEASE_S
    ctx.claims = Claims(ctx.blobs, ctx.settings.control_container, lease_seconds=LEASE_S, heartbeat_seconds=5)
    return ctx


# ----------------------------------------------------------------------------- driving a run as the host does


def finalize_messages(ctx: Context) -> int:
    """Deliver each waiting finalize request as the queue trigger does: a finalize that returns
    consumes its message, one that raises leaves it to be delivered again (here after 2 s)."""
    handled = 0
    for msg in ctx.finalize_queue.receive_messages(messages_per_page=16, visibility_timeout=2):
        try:
            finalize(ctx, naming.run_id_of_message(msg.content))
        except Exception:
            continue
        ctx.finalize_queue.delete_message(msg)
        handled += 1
    return handled


def drive(ctx: Context, run_id: str, deadline_s: float = 90.0, during: Callable[[], None] | None = None,
          seen: list[dict] | None = None) -> dict:
    """Monitor ticks and finalize deliveries until the run is final (bounded). A tick or a delivery
    that fails because storage is down is what the host would log and try again. `during` is called
    before each tick; `seen` collects status.json as it was after each tick."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if during is not None:
            during()
        try:
            watch(ctx)
            finalize_messages(ctx)
            run = ctx.runs.try_read(run_id)
        except Exception:
            run = None
        if run is not None and seen is not None:
            seen.append(run.to_json())
        if run is not None and run.state in TERMINAL:
            return run.to_json()
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} not finished after {deadline_s}s")


def transfer_stats(emulator) -> dict:
    with urllib.request.urlopen(f"{emulator.url}/_emulator/stats", timeout=10) as response:
        return json.loads(response.read())["transfers"]


def report_of(ctx: Context, run_id: str) -> dict:
    return json.loads(results_blob(ctx, f"{run_id}/report.json"))


def canonical(line: str | bytes) -> str:
    return json.dumps(json.loads(line), sort_keys=True)


def merged_records(ctx: Context, run_id: str) -> Counter:
    return Counter(canonical(line) for line in results_blob(ctx, f"{run_id}/output.jsonl").splitlines())


def records(n: int) -> list[str]:
    return [json.dumps({"n": i, "pad": "r" * 40}) for i in range(n)]


# ----------------------------------------------------------------------------- tasks meet the outage


class OutageDuringTasks:
    """Stops Azurite for OUTAGE_S once `when(task counts)` (by default: some tasks have completed,
    others run and more wait, so running tasks upload and waiting ones download while storage is
    down). Notes the failures tasks completed with meanwhile (read from Batch, which stays up)."""

    def __init__(self, outage: Outage, batch, run_id: str, when: Callable[[object], bool] | None = None,
                 then: Callable[[], None] | None = None) -> None:
        self.outage, self.batch, self.run_id, self.then = outage, batch, run_id, then
        self.when = when or (lambda counts: counts.completed >= 8 and counts.running > 0 and counts.active > 0)
        self.thread: threading.Thread | None = None
        self.failures: set[tuple[str, str]] = set()  # (task id, failure code)

    def __call__(self) -> None:
        if self.thread is None:
            try:
                counts = self.batch.get_job_task_counts(self.run_id).task_counts
            except Exception:
                return  # the job is not there yet
            if self.when(counts):
                self.thread = self.outage.for_seconds()
                if self.then is not None:
                    self.then()  # storage is down now
        elif self.thread.is_alive():
            for t in self.batch.list_tasks(self.run_id, filter="state eq 'completed'", select=["id", "executionInfo"]):
                info = t.execution_info.failure_info if t.execution_info else None
                if info is not None:
                    self.failures.add((t.id, info.code))

    def failure_codes(self) -> set[str]:
        return {code for _, code in self.failures}


def test_a_3s_outage_while_50_tasks_transfer_is_retried_by_the_pipeline(outage, store, single_try_emulator):
    """Transfer retries off: every task that uploads or downloads while storage is down fails
    (FileUploadMiscError, BlobDownloadMiscError); the monitor runs each again (infrastructure
    retries, counted apart from the tasks' own) and the run succeeds with every record once."""
    ctx = make_context(store, single_try_emulator)
    batch = batch_client(single_try_emulator)
    lines = records(200)
    put_data(ctx, "outage/in.jsonl", ("\n".join(lines) + "\n").encode())
    d = drop(ctx, "outage50.json", {"command": f"sleep 0.6; {COPY}", "items_per_task": 4,
                                    "input": {"blob": f"{ctx.settings.data_container}/outage/in.jsonl"}})
    accept(ctx, d.container, d.name)
    assert status(ctx, d.run_id)["tasks"]["total"] == 50
    during, seen = OutageDuringTasks(outage, batch, d.run_id), []
    final = drive(ctx, d.run_id, during=during, seen=seen)
    assert during.thread is not None
    during.thread.join()
    # tasks that were running failed their upload, tasks that started failed their download
    assert {"BlobDownloadMiscError", "FileUploadMiscError"} <= during.failure_codes(), during.failures
    assert max(s["tasks"].get("waiting_retry", 0) for s in seen) > 0  # status.json showed them waiting
    assert final["state"] == "succeeded", final
    report = report_of(ctx, d.run_id)
    retried = sum(e.get("infra_retries", 0) for e in report["entries"])
    assert report["infrastructure_retries"] > 0 and report["infrastructure_retries"] == retried
    assert all(e["retries"] == 0 for e in report["entries"])
    assert merged_records(ctx, d.run_id) == Counter(map(canonical, lines))  # every record, exactly once
    assert work_containers_left(ctx) == [] and jobs_left(batch, d.run_id) == []


def test_a_3s_outage_is_absorbed_by_the_emulators_own_transfer_retries(outage, store, retrying_emulator):
    """Transfer retries on (the emulator's default, like the Batch node agent's): the transfers ride
    out the outage themselves; whatever the pipeline counts, the run succeeds with every record once."""
    ctx = make_context(store, retrying_emulator)
    batch = batch_client(retrying_emulator)
    before = transfer_stats(retrying_emulator)
    lines = records(200)
    d = drop(ctx, "absorbed50.json", {"command": f"sleep 0.6; {COPY}", "items_per_task": 4,
                                      "input": {"items": [json.loads(line) for line in lines]}})
    accept(ctx, d.container, d.name)
    during = OutageDuringTasks(outage, batch, d.run_id)
    final = drive(ctx, d.run_id, during=during)
    assert during.thread is not None
    during.thread.join()
    assert final["state"] == "succeeded", final
    after = transfer_stats(retrying_emulator)
    assert after["retries"] > before["retries"] and after["exhausted"] == before["exhausted"], (before, after)
    assert merged_records(ctx, d.run_id) == Counter(map(canonical, lines))
    assert work_containers_left(ctx) == [] and jobs_left(batch, d.run_id) == []


def _running(batch, run_id: str, task_id: str) -> bool:
    try:
        return batch.get_task(run_id, task_id).state == "running"
    except Exception:
        return False


@pytest.mark.parametrize("emu", [
    pytest.param("single_try_emulator", id="emulator-single-try"),
    pytest.param("retrying_emulator", id="emulator-retrying"),
])
def test_a_users_own_failure_during_an_outage_is_not_retried_beyond_its_retries(outage, store, emu, request,
                                                                                tmp_path):
    """A task whose command exits 3 ("retries": 1) while storage is down runs its command at most
    twice, gets no infrastructure retry for its own failure, and the run fails naming it."""
    emulator = request.getfixturevalue(emu)
    ctx = make_context(store, emulator)
    batch = batch_client(emulator)
    # the emulator runs commands on this host: t000012 notes each run of its command in `runs`, and
    # its first try exits 3 only once storage is down (`down` appears), so its logs meet the outage
    runs, down = tmp_path / "runs", tmp_path / "down"
    items = [{"n": i, **({"boom": 1} if i == 12 else {})} for i in range(30)]
    command = (f'if grep -q boom "$INPUT_PATH"; then echo run >> {runs}; '
               f'while [ ! -e {down} ]; do sleep 0.05; done; echo boom >&2; exit 3; fi; sleep 0.6; {COPY}')
    d = drop(ctx, "exit3.json", {"command": command, "retries": 1, "input": {"items": items}})
    accept(ctx, d.container, d.name)
    during = OutageDuringTasks(outage, batch, d.run_id, when=lambda counts: _running(batch, d.run_id, "t000012"),
                               then=down.touch)
    final = drive(ctx, d.run_id, during=during)
    assert during.thread is not None
    during.thread.join()
    assert final["state"] == "failed", final
    assert "t000012" in final["error"] and "exit code 3" in final["error"], final["error"]
    entry = next(e for e in report_of(ctx, d.run_id)["entries"] if e["task_id"] == "t000012")
    assert entry["exit_code"] == 3, entry
    assert entry["retries"] <= 1, entry
    assert runs.read_text().count("run") <= 2  # its command ran at most 1 + its own retries times
    if emu == "single_try_emulator":
        # Batch runs the task's own retry at once; when that try reaches its input download while
        # storage is still down, its command never runs (no exit code): that try alone is the
        # infrastructure's, and is retried as such (the command still ran at most twice, above)
        assert entry.get("infra_retries", 0) <= 1, entry
    if emu == "retrying_emulator":  # the outage was absorbed by the transfers: the task's own two tries
        assert not entry.get("infra_retries"), entry
        assert entry["retries"] == 1 and entry["failure"]["code"] == "FailureExitCode", entry
        assert runs.read_text().count("run") == 2
    assert work_containers_left(ctx) == [] and jobs_left(batch, d.run_id) == []


# ----------------------------------------------------------------------------- each step meets the outage


def retry_step(step: Callable[[], object], done: Callable[[], bool], what: str, timeout: float = LEASE_S + 20) -> int:
    """Call `step` again, as the trigger's retries (and then the monitor's re-drive) would, until
    `done()`. Returns how many calls it took. A retry within LEASE_S of the failed attempt may find
    that attempt's claim still leased (it could not be released while storage was down) and do
    nothing; the lease expires by itself."""
    deadline = time.monotonic() + timeout
    calls = 0
    while True:
        result = step()
        calls += 1
        if done():
            return calls
        assert time.monotonic() < deadline, f"{what}: not done after {calls} calls (last: {result!r})"
        time.sleep(0.5)


def state_events(ctx: Context, run_id: str) -> list[str]:
    return [kind for kind, run, _ in ctx.events.events if run == run_id]


def task_ids(batch, run_id: str) -> list[str]:
    return sorted(t.id for t in batch.list_tasks(run_id, select=["id"]))


def to_merging(ctx: Context, run_id: str) -> None:
    """Monitor ticks until the run is merging; its finalize request is left to the test."""
    wait_for(lambda: watch(ctx).get(run_id) == "finalize requested", timeout=60, interval=0.2,
             what="the run merging")
    ctx.finalize_queue.clear_messages()


def assert_succeeded_once(ctx: Context, batch, run_id: str, lines: list[str]) -> None:
    """Succeeded, every record merged once, one event per state, nothing left behind."""
    final = status(ctx, run_id)
    assert final["state"] == "succeeded", final
    assert merged_records(ctx, run_id) == Counter(map(canonical, lines))
    assert state_events(ctx, run_id) == ["accepted", "running", "succeeded"]  # each change once
    assert work_containers_left(ctx) == [] and jobs_left(batch, run_id) == []


def test_intake_stopped_by_an_outage_while_uploading_shards_is_retried_and_submits_once(outage, store,
                                                                                     retrying_emulator):
    ctx = make_context(store, retrying_emulator)
    batch = batch_client(retrying_emulator)
    lines = records(40)  # one small shard each
    d = drop(ctx, "intake-outage.json", {"command": COPY, "input": {"items": [json.loads(x) for x in lines]}})
    in_container, _ = work_containers(ctx, d.run_id)
    outage.arm(10, lambda method, url: method == "PUT" and f"/{in_container}/shards/" in url)
    with pytest.raises(STORAGE_DOWN):
        accept(ctx, d.container, d.name)
    assert outage.tripped.is_set()
    outage.start()
    assert status(ctx, d.run_id)["state"] == "accepted"  # not final: the trigger retries
    # the job is created before the first chunk's upload, its tasks only once their shards are in: the
    # first chunk (one round of uploads) went in before the outage, the one it stopped added nothing
    added = task_ids(batch, d.run_id)
    assert jobs_left(batch, d.run_id) == [d.run_id] and added == [f"t{i:06d}" for i in range(len(added))]
    shards = storage.blob_names(ctx.blobs, in_container, "shards/")
    assert len(added) < 10 and [name.split(".")[0] for name in shards[:len(added)]] == \
        [f"shards/{i:06d}" for i in range(len(added))]

    retry_step(lambda: accept(ctx, d.container, d.name), lambda: status(ctx, d.run_id)["state"] == "running",
               "intake")
    assert task_ids(batch, d.run_id) == [f"t{i:06d}" for i in range(40)]  # one job, each task once
    accept(ctx, d.container, d.name)  # a late duplicate delivery changes nothing
    assert drive(ctx, d.run_id)["state"] == "succeeded"
    assert_succeeded_once(ctx, batch, d.run_id, lines)


def test_monitor_ticks_that_meet_an_outage_change_nothing_final_and_a_lost_finalize_request_is_redriven(
        outage, store, retrying_emulator):
    """Storage goes down between a tick's commit (running -> merging) and its finalize request; the
    ticks while it is down fail as a whole (the timer runs the next one). Nothing is final, and a
    later tick asks for the finalize again once REDRIVE_AFTER has passed (the test's clock is moved
    on rather than waited for)."""
    skipped = {"by": timedelta(0)}
    ctx = make_context(store, retrying_emulator, clock=lambda: utc_now() + skipped["by"])
    batch = batch_client(retrying_emulator)
    lines = records(6)
    d = drop(ctx, "tick-outage.json", {"command": COPY, "input": {"items": [json.loads(x) for x in lines]}})
    accept(ctx, d.container, d.name)
    wait_for(lambda: batch.get_job_task_counts(d.run_id).task_counts.completed == 6, timeout=30,
             what="the tasks done")
    queue = f"/{ctx.settings.finalize_queue}/messages"
    outage.arm(1, lambda method, url: method == "POST" and queue in url)
    outcome = watch(ctx)  # one run's failure is logged and the tick goes on to the next run
    assert outage.tripped.is_set() and outcome[d.run_id].startswith("error"), outcome
    with pytest.raises(STORAGE_DOWN):
        watch(ctx)  # a tick while storage is down: the timer function fails, the next tick comes
    outage.start()
    assert status(ctx, d.run_id)["state"] == "merging"
    assert ctx.finalize_queue.peek_messages() == []  # the request was lost
    assert watch(ctx)[d.run_id] == "merging"  # asked for lately: a finalize may be at work
    skipped["by"] = REDRIVE_AFTER + timedelta(seconds=5)
    assert watch(ctx)[d.run_id] == "finalize re-requested"
    assert drive(ctx, d.run_id)["state"] == "succeeded"
    assert_succeeded_once(ctx, batch, d.run_id, lines)


def test_finalize_stopped_by_outages_while_merging_and_cleaning_up_is_retried_and_finishes_once(
        outage, store, retrying_emulator):
    """Storage goes down while the merge streams the task outputs; the retry meets another outage
    when it deletes the work containers (after report.json is written); the next retry finishes."""
    ctx = make_context(store, retrying_emulator)
    batch = batch_client(retrying_emulator)
    lines = [json.dumps({"n": i, "pad": "m" * 2000}) for i in range(1200)]  # 40 tasks of ~60 KB
    put_data(ctx, "merge/in.jsonl", ("\n".join(lines) + "\n").encode())
    d = drop(ctx, "finalize-outage.json", {"command": COPY, "items_per_task": 30,
                                           "input": {"blob": f"{ctx.settings.data_container}/merge/in.jsonl"}})
    accept(ctx, d.container, d.name)
    to_merging(ctx, d.run_id)
    _, out_container = work_containers(ctx, d.run_id)

    outage.arm(12, lambda method, url: method == "GET" and f"/{out_container}/tasks/" in url)
    with pytest.raises(STORAGE_DOWN):
        finalize(ctx, d.run_id)  # the queue trigger delivers the message again
    assert outage.tripped.is_set()
    outage.start()
    assert status(ctx, d.run_id)["state"] == "merging"
    assert results_blob(ctx, f"{d.run_id}/output.jsonl") is None  # committed only once complete
    assert results_blob(ctx, f"{d.run_id}/report.json") is None

    outage.arm(1, lambda method, url: method == "DELETE" and f"/{out_container}?" in url)
    with pytest.raises(STORAGE_DOWN):
        finalize(ctx, d.run_id)
    assert outage.tripped.is_set()
    outage.start()
    assert status(ctx, d.run_id)["state"] == "merging"
    assert report_of(ctx, d.run_id)["state"] == "succeeded"  # written before the cleanup
    assert state_events(ctx, d.run_id).count("succeeded") == 0

    retry_step(lambda: finalize(ctx, d.run_id), lambda: status(ctx, d.run_id)["state"] in TERMINAL, "finalize")
    assert finalize(ctx, d.run_id) == "succeeded"  # a late duplicate delivery changes nothing
    assert report_of(ctx, d.run_id)["outputs_verified"] == 40
    assert_succeeded_once(ctx, batch, d.run_id, lines)
