"""The timer trigger, with the TimerListener's semantics.

* One invocation at a time per function: the next occurrence is computed from the start of
  the previous run, and a run that outlasts the period makes the next one start as soon as
  it ends (once, not once per missed occurrence) -- never two at once.
* ``runOnStartup`` fires once right after start, only when set.
* ``useMonitor`` (default: on for schedules of a minute or more) keeps the schedule status in
  ``azure-webjobs-hosts/timers/<hostId>/Host.Functions.<name>/status``; at start, an
  occurrence missed while no host ran is invoked at once with ``IsPastDue`` true. As in the
  host, ``past_due`` is true only for that catch-up run (a late start after a long run is
  not past due).
* The function receives ``func.TimerRequest`` decoded from the host's TimerInfo JSON.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from .indexing import FunctionSpec
from .invoker import Datum, InvocationResult, Invoker

__all__ = ["ScheduleMonitor", "TimerListener"]

log = logging.getLogger("devhost.timers")

_EPOCH = _dt.datetime(1, 1, 1)
_NEVER = _dt.datetime.max.replace(tzinfo=_dt.UTC)


def _now() -> _dt.datetime:
    return _dt.datetime.now()


def _iso(d: _dt.datetime | None) -> str | None:
    if d is None:
        return None
    if d == _EPOCH:
        return "0001-01-01T00:00:00"
    return d.astimezone().isoformat()


def _parse(s: str | None) -> _dt.datetime:
    if not s or s.startswith("0001-01-01"):
        return _EPOCH
    d = _dt.datetime.fromisoformat(s)
    return d.astimezone().replace(tzinfo=None) if d.tzinfo else d


class ScheduleMonitor:
    """Schedule status in blob storage (the host's StorageScheduleMonitor)."""

    def __init__(self, hosts_container: Any, host_id: str) -> None:
        self.container = hosts_container
        self.host_id = host_id

    def _blob(self, timer_name: str) -> Any:
        return self.container.get_blob_client(f"timers/{self.host_id}/{timer_name}/status")

    def get_status(self, timer_name: str) -> dict[str, _dt.datetime] | None:
        try:
            data = json.loads(self._blob(timer_name).download_blob().readall() or b"{}")
        except ResourceNotFoundError:
            return None
        except ValueError:
            return None
        return {"Last": _parse(data.get("Last")), "Next": _parse(data.get("Next")),
                "LastUpdated": _parse(data.get("LastUpdated"))}

    def update_status(self, timer_name: str, status: dict[str, _dt.datetime]) -> None:
        body = json.dumps({k: _iso(v) for k, v in status.items()})
        blob = self._blob(timer_name)
        try:
            blob.upload_blob(body, overwrite=True)
        except ResourceNotFoundError:
            try:
                self.container.create_container()
            except ResourceExistsError:
                pass
            blob.upload_blob(body, overwrite=True)

    def check_past_due(self, timer_name: str, now: _dt.datetime, schedule: Any,
                       status: dict[str, _dt.datetime] | None) -> tuple[_dt.timedelta, dict[str, _dt.datetime]]:
        """(how late the recorded next occurrence is, the status to use)."""
        if status is None:
            status = {"Last": _EPOCH, "Next": schedule.next_occurrence(now), "LastUpdated": now}
            self.update_status(timer_name, status)
            return _dt.timedelta(0), status
        if status["Last"] != _EPOCH:
            expected = schedule.next_occurrence(status["Last"])
        elif status["LastUpdated"] != _EPOCH:
            expected = schedule.next_occurrence(status["LastUpdated"])
        else:
            expected = status["Next"]
        if expected is not None and status["Next"] != expected:
            # The schedule changed since the status was written.
            status = {**status, "Next": expected, "LastUpdated": now}
            self.update_status(timer_name, status)
        late = now - status["Next"]
        return (late if late > _dt.timedelta(0) else _dt.timedelta(0)), status


class TimerListener:
    def __init__(self, spec: FunctionSpec, invoker: Invoker, monitor: ScheduleMonitor | None = None,
                 now: Callable[[], _dt.datetime] = _now) -> None:
        assert spec.schedule is not None
        self.spec = spec
        self.schedule = spec.schedule
        self.invoker = invoker
        self.monitor = monitor if spec.use_monitor else None
        self.now = now
        self.status: dict[str, _dt.datetime] = {"Last": _EPOCH, "Next": self._next_after(now()),
                                                "LastUpdated": _EPOCH}
        self._lock = threading.Lock()          # never two invocations of this timer at once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._startup: dict[str, Any] | None = None

    @property
    def timer_name(self) -> str:
        return self.spec.function_id

    def start(self) -> None:
        if self._thread is not None:
            return
        now = self.now()
        past_due = False
        log.info("The '%s' function is scheduled: %s (time zone: %s)", self.spec.name, self.schedule,
                 _dt.datetime.now().astimezone().tzname())
        if self.monitor is not None:
            late, self.status = self.monitor.check_past_due(
                self.timer_name, now, self.schedule, self.monitor.get_status(self.timer_name))
            past_due = late > _dt.timedelta(0)
        else:
            self.status = {"Last": _EPOCH, "Next": self._next_after(now), "LastUpdated": _EPOCH}
        if past_due:
            self._startup = {"past_due": True, "original": self.status["Next"]}
        elif self.spec.run_on_startup:
            self._startup = {"run_on_startup": True}
        log.info("Next occurrences of '%s': %s", self.spec.name, ", ".join(self.next_occurrences(3)))
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"devhost-timer-{self.spec.name}", daemon=True)
        self._thread.start()

    def _next_after(self, t: _dt.datetime) -> _dt.datetime:
        """The schedule's next time after `t`; a schedule that never fires again waits forever."""
        return self.schedule.next_occurrence(t) or _NEVER

    def next_occurrences(self, count: int) -> list[str]:
        out: list[str] = []
        t: _dt.datetime | None = self.now()
        for _ in range(count):
            t = self.schedule.next_occurrence(t) if t is not None else None
            if t is None:
                break
            out.append(t.isoformat(sep=" ", timespec="seconds"))
        return out

    def stop(self, timeout: float | None = None) -> None:
        """Cancel the schedule; an invocation in progress is allowed to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            startup, self._startup = self._startup, None
            if startup is None:
                while not self._stop.is_set():
                    # re-read: a manual fire() meanwhile moves the next occurrence on
                    remaining = (self.status["Next"] - self.now()).total_seconds()
                    if remaining <= 0:
                        break
                    self._stop.wait(min(remaining, 1.0))
                if self._stop.is_set():
                    return
            try:
                if startup and startup.get("past_due"):
                    log.info("Timer is past due for function '%s'", self.spec.name)
                    self.fire(past_due=True, original_schedule=startup.get("original"))
                elif startup and startup.get("run_on_startup"):
                    self.fire(run_on_startup=True)
                else:
                    self.fire()
            except Exception as e:  # errors must not stop the schedule
                log.error("Error occurred during scheduled invocation for '%s': %s", self.spec.name, e)

    def fire(self, past_due: bool = False, run_on_startup: bool = False,
             original_schedule: _dt.datetime | None = None) -> InvocationResult | None:
        """Invoke now (waits for a running invocation of this timer to end first)."""
        with self._lock:
            if self._stop.is_set() and self._thread is not None and threading.current_thread() is self._thread:
                return None
            invocation_time = self.now()
            status_json = ({"Last": _iso(self.status["Last"]), "Next": _iso(self.status["Next"]),
                            "LastUpdated": _iso(self.status["LastUpdated"])} if self.monitor else None)
            info = {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": status_json, "IsPastDue": past_due}
            details: dict[str, Any] = {"past_due": past_due}
            if past_due:
                details["UnscheduledInvocationReason"] = "IsPastDue"
            elif run_on_startup:
                details["UnscheduledInvocationReason"] = "RunOnStartup"
            if original_schedule is not None:
                details["OriginalSchedule"] = original_schedule.isoformat()
            result = self.invoker.invoke(self.spec, Datum(json.dumps(info), "json"), {},
                                         reason=f"Timer fired at {invocation_time.astimezone().isoformat()}",
                                         details=details)
            adjusted = invocation_time
            if not past_due and not run_on_startup and self.status["Next"] > invocation_time:
                adjusted = self.status["Next"]  # fired a hair early: don't schedule the same time twice
            self.status = {"Last": adjusted, "Next": self._next_after(adjusted),
                           "LastUpdated": adjusted}
            if self.monitor is not None:
                try:
                    self.monitor.update_status(self.timer_name, self.status)
                except Exception as e:
                    log.warning("Could not update the schedule status of '%s': %s", self.spec.name, e)
            return result
