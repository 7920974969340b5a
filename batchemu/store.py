"""Durable state in SQLite (WAL), written behind by one writer thread.

The in-memory model is the source of truth while the emulator runs; every mutation is queued here and
committed by a single writer thread in batches (coalesced by key). Creating operations wait for their
batch to be committed before answering, so an acknowledged create survives a crash; state transitions
of running tasks, which nobody waits for, are gathered for `LINGER_S` and committed within milliseconds
(one transaction for many short tasks instead of one each). On a clean stop everything is flushed.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("batchemu.store")

SCHEMA = """
DROP TABLE IF EXISTS meta;
CREATE TABLE IF NOT EXISTS pools (k TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (k TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (jk TEXT NOT NULL, tk TEXT NOT NULL, seq INTEGER NOT NULL, doc TEXT NOT NULL,
                                  PRIMARY KEY (jk, tk)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS faults (jk TEXT NOT NULL, tk TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (jk, tk));
"""

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# How long the writer gathers changes nobody waits for before committing them (a waiter ends it at once)
LINGER_S = 0.005

Doc = dict[str, Any]
Key = tuple[str, ...]  # ("pool", k) | ("job", k) | ("task", jk, tk) | ("fault", jk, tk)


class Store:
    def __init__(self, data_dir: str):
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.join(data_dir, "state.sqlite3")
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._cv = threading.Condition()
        self._pending: dict[Key, Any] = {}  # key -> serialised doc ((seq, doc) for tasks), None to delete
        self._job_task_deletes: set[str] = set()
        self._gen = 0
        self._committed = 0
        self._waiters = 0
        self._lingering = False  # the writer is gathering: a change needs no wake-up
        self._stop = False
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="batchemu-store", daemon=True)

    # ---- loading (startup, before the writer starts) -------------------------------------------
    def load(self) -> tuple[list[Doc], list[Doc], list[tuple[str, str, Doc]]]:
        """(pools, jobs, faults as (job key, task key, doc)); tasks come from `iter_tasks`."""
        pools = [json.loads(d) for (d,) in self.db.execute("SELECT doc FROM pools")]
        jobs = [json.loads(d) for (d,) in self.db.execute("SELECT doc FROM jobs")]
        faults = [(jk, tk, json.loads(d)) for jk, tk, d in self.db.execute("SELECT jk, tk, doc FROM faults")]
        return pools, jobs, faults

    def iter_tasks(self) -> Iterator[tuple[str, int, dict[str, Any]]]:
        """(job key, sequence number, document) of every task, each job's tasks in sequence order."""
        cur = self.db.execute("SELECT jk, seq, doc FROM tasks ORDER BY jk, seq")
        for jk, seq, doc in cur:
            yield jk, seq, json.loads(doc)

    def start(self) -> None:
        self._thread.start()

    # ---- mutations (any thread) -------------------------------------------------------------------
    def _put(self, key: Key, value: Any) -> int:
        with self._cv:
            self._pending[key] = value
            self._gen += 1
            if not self._lingering:
                self._cv.notify()
            return self._gen

    def put_pool(self, k: str, doc: Doc) -> int:
        return self._put(("pool", k), _dumps(doc))

    def delete_pool(self, k: str) -> int:
        return self._put(("pool", k), None)

    def put_job(self, k: str, doc: Doc) -> int:
        return self._put(("job", k), _dumps(doc))

    def delete_job(self, k: str) -> int:
        with self._cv:
            for key in [key for key in self._pending if key[0] in ("task", "fault") and key[1] == k]:
                del self._pending[key]
            self._job_task_deletes.add(k)
            self._pending[("job", k)] = None
            self._gen += 1
            self._cv.notify()
            return self._gen

    def put_task(self, jk: str, tk: str, seq: int, doc: Doc) -> int:
        return self._put(("task", jk, tk), (seq, _dumps(doc)))

    def put_tasks(self, items: Iterable[tuple[str, str, int, Doc]]) -> int:
        """items: iterable of (jk, tk, seq, doc) written in one go."""
        with self._cv:
            for jk, tk, seq, doc in items:
                self._pending[("task", jk, tk)] = (seq, _dumps(doc))
            self._gen += 1
            self._cv.notify()
            return self._gen

    def delete_task(self, jk: str, tk: str) -> int:
        return self._put(("task", jk, tk), None)

    def put_fault(self, jk: str, tk: str, doc: Doc | None) -> int:
        return self._put(("fault", jk, tk), _dumps(doc) if doc else None)

    def wait(self, gen: int, timeout: float = 30.0) -> None:
        with self._cv:
            self._waiters += 1
            self._cv.notify_all()  # a lingering writer commits now
            try:
                self._cv.wait_for(lambda: self._committed >= gen or self._error is not None or self._stop, timeout)
            finally:
                self._waiters -= 1

    # ---- writer -------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending or self._job_task_deletes or self._stop)
                if not self._waiters and not self._stop:
                    self._lingering = True
                    self._cv.wait_for(lambda: self._waiters > 0 or self._stop, LINGER_S)
                    self._lingering = False
                if self._stop and not self._pending and not self._job_task_deletes:
                    return
                pending, self._pending = self._pending, {}
                job_deletes, self._job_task_deletes = self._job_task_deletes, set()
                gen = self._gen
            try:
                self._write(pending, job_deletes)
            except Exception as exc:  # keep running; report
                log.exception("state write failed: %s", exc)
                self._error = exc
            with self._cv:
                self._committed = gen
                self._cv.notify_all()

    def _write(self, pending: dict[Key, Any], job_deletes: set[str]) -> None:
        db = self.db
        db.execute("BEGIN")
        try:
            for jk in job_deletes:
                db.execute("DELETE FROM tasks WHERE jk=?", (jk,))
                db.execute("DELETE FROM faults WHERE jk=?", (jk,))
            task_up: list[tuple[str, str, int, str]] = []
            task_del: list[tuple[str, str]] = []
            for key, val in pending.items():
                kind = key[0]
                if kind == "task":
                    if val is None:
                        task_del.append((key[1], key[2]))
                    else:
                        task_up.append((key[1], key[2], val[0], val[1]))
                elif kind in ("pool", "job"):
                    table = "pools" if kind == "pool" else "jobs"
                    if val is None:
                        db.execute(f"DELETE FROM {table} WHERE k=?", (key[1],))
                    else:
                        db.execute(f"INSERT OR REPLACE INTO {table}(k, doc) VALUES (?, ?)", (key[1], val))
                elif kind == "fault":
                    if val is None:
                        db.execute("DELETE FROM faults WHERE jk=? AND tk=?", (key[1], key[2]))
                    else:
                        db.execute("INSERT OR REPLACE INTO faults(jk, tk, doc) VALUES (?, ?, ?)", (key[1], key[2], val))
            if task_del:
                db.executemany("DELETE FROM tasks WHERE jk=? AND tk=?", task_del)
            if task_up:
                db.executemany("INSERT OR REPLACE INTO tasks(jk, tk, seq, doc) VALUES (?, ?, ?, ?)", task_up)
            db.execute("COMMIT")
        except Exception:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.db.close()
        except Exception:
            pass
