"""report.html from report.json: structure (read back with html.parser), escaping, aggregation, size."""
from __future__ import annotations

import heapq
import io
import json
import random
import re
import tracemalloc
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from shared.report_html import DEFAULT_LIMITS, Limits, iter_html, write_html

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
HOSTILE = "boom </pre><script>alert('x')</script> & <img src=x onerror=alert(1)>"


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def synthetic_report(n: int, *, nodes: int = 5, slots: int = 4, fail_every: int = 10, seed: int = 7,
                     straggler_every: int = 997) -> dict:
    """A report.json of `n` tasks scheduled on `nodes` x `slots` lanes as Batch would: each task
    on the slot that frees first. Every `fail_every`-th task fails (with a hostile stderr tail),
    every 7th was retried once, and every `straggler_every`-th runs 8 times longer."""
    rnd = random.Random(seed)
    lanes = [(60.0 + rnd.random() * 20, f"tvmps_{i // slots:03d}_d", i % slots) for i in range(nodes * slots)]
    heapq.heapify(lanes)
    entries = []
    for i in range(n):
        free, node, slot = heapq.heappop(lanes)
        seconds = rnd.lognormvariate(3, 0.3) * (8 if i % straggler_every == 5 else 1)
        heapq.heappush(lanes, (free + seconds + 0.5, node, slot))
        failed = i % fail_every == 3 % fail_every
        entry = {"task_id": f"t{i:06d}", "index": i, "outcome": "failed" if failed else "succeeded",
                 "exit_code": 3 if failed else 0, "retries": 2 if failed else int(i % 7 == 0), "requeues": 0,
                 "duration_s": round(seconds, 3), "start_time": iso(T0 + timedelta(seconds=free)),
                 "end_time": iso(T0 + timedelta(seconds=free + seconds)), "node_id": node, "slot": slot}
        if failed:
            entry["failure"] = {"category": "usererror", "code": "FailureExitCode",
                                "message": "The task exited with an exit code representing a failure"}
            entry["stderr_tail"] = f"Traceback (task {i})\n{HOSTILE}\n"
        entries.append(entry)
    failed_count = sum(1 for e in entries if e["outcome"] == "failed")
    return {"run_id": "j-0123456789abcdef", "state": "succeeded",
            "tasks": {"total": n, "succeeded": n - failed_count, "failed": failed_count}, "entries": entries,
            "warnings": [f"partial result: {failed_count} task(s) did not succeed"],
            "output": "results/j-0123456789abcdef/output.jsonl", "output_bytes": 123456,
            "output_sha256": "ab" * 32,
            "timings": {"created_at": iso(T0), "merged_at": iso(T0 + timedelta(hours=1)), "wall_s": 3600.0},
            "usage": {"wall_s": 3600.0, "queue_s": 61.0, "busy_slot_s": 50000.0, "node_s_dedicated": 18000.0,
                      "node_s_spot": 3600.0, "efficiency": 0.58},
            "cost": {"amount": 0.576, "currency": "USD", "vm_size": "standard_d2s_v3",
                     "prices": {"region": "eastus", "date": "2026-12-02", "source": "Azure Retail Prices API"}}}


JOB_FILE = json.dumps({"command": "python work.py", "input": {"items": [1, 2, 3]}}, indent=2)


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: list[str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class Document(HTMLParser):
    """Every element with its attributes and the text inside it (html.parser, as a browser would
    tokenise it, entities decoded)."""

    VOID = {"meta", "br", "img", "input", "link", "hr"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.open: list[Element] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.elements.append(element)
        if tag not in self.VOID:
            self.open.append(element)

    def handle_startendtag(self, tag, attrs):
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i].tag == tag:
                del self.open[i:]
                break

    def handle_data(self, data):
        for element in self.open:
            element.text.append(data)

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Element]:
        return [e for e in self.elements if (tag is None or e.tag == tag) and (cls is None or cls in e.classes)
                and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]


def render(report: dict, job_file: str | None = JOB_FILE, limits: Limits = DEFAULT_LIMITS) -> str:
    out = io.StringIO()
    write_html(report, job_file, out, limits)
    return out.getvalue()


@pytest.fixture(scope="module")
def small() -> tuple[dict, str, Document]:
    report = synthetic_report(40)
    text = render(report)
    return report, text, Document(text)


@pytest.fixture(scope="module")
def large() -> tuple[dict, str]:
    report = synthetic_report(20_000, nodes=25, fail_every=100)
    return report, render(report)


def test_a_small_run_has_one_bar_per_task(small):
    report, _, doc = small
    (timeline,) = doc.find("svg", "timeline")
    assert timeline.attrs["data-mode"] == "tasks"
    bars = doc.find("rect", "task")
    assert sorted(b.attrs["data-task"] for b in bars) == [e["task_id"] for e in report["entries"]]
    failed = {e["task_id"] for e in report["entries"] if e["outcome"] == "failed"}
    assert {b.attrs["data-task"] for b in bars if "failed" in b.classes} == failed
    assert {b.attrs["data-task"] for b in bars if "ok" in b.classes} == {e["task_id"] for e in report["entries"]} - failed
    retried = {e["task_id"] for e in report["entries"] if e["retries"]}
    assert {b.attrs["data-task"] for b in bars if "retried" in b.classes} == retried
    # not colour alone: each bar says what it is in words, and the legend names every kind
    assert all(("failed" if "failed" in b.classes else "succeeded") in "".join(b.text) for b in bars)
    assert {li.attrs["data-kind"] for li in doc.find("li", "legend-item")} == {"ok", "failed", "stopped", "retried"}


def test_bars_sit_in_lanes_per_node_and_slot(small):
    report, _, doc = small
    lanes = doc.find("g", "lane")
    used = {(e["node_id"], str(e["slot"])) for e in report["entries"]}
    assert {(g.attrs["data-node"], g.attrs["data-slot"]) for g in lanes} == used
    assert int(doc.find("svg", "timeline")[0].attrs["data-lanes"]) == len(used)


def test_the_summary_gives_state_counts_time_node_hours_cost_and_efficiency(small):
    _, _, doc = small
    metrics = {d.attrs["data-metric"]: "".join(d.text) for d in doc.find("div", "metric")}
    assert metrics["state"] == "Statesucceeded"  # <dt>State</dt><dd>succeeded</dd>
    assert metrics["tasks"] == "Tasks4036 succeeded, 4 failed"
    assert "1h 00m 00s" in metrics["wall"]
    assert "6.00" in metrics["node-hours"] and "dedicated 5.00, spot 1.00" in metrics["node-hours"]
    assert "0.58 USD" in metrics["cost"] and "eastus" in metrics["cost"] and "2026-12-02" in metrics["cost"]
    assert "58.0 %" in metrics["efficiency"]
    assert doc.find("li", "warning")


def test_failures_are_listed_with_their_stderr_tails(small):
    report, _, doc = small
    failed = [e["task_id"] for e in report["entries"] if e["outcome"] == "failed"]
    items = doc.find("li", "failure")
    assert [li.attrs["data-task"] for li in items] == failed
    stderr = doc.find("pre", "stderr")
    assert len(stderr) == len(failed) and all(HOSTILE in "".join(p.text) for p in stderr)
    (row,) = doc.find("tr", data_code="FailureExitCode")
    assert "".join(row.text).endswith(str(len(failed)))


def test_stderr_and_the_job_file_are_escaped_never_markup(small):
    _, text, doc = small
    assert not doc.find("script") and not doc.find("img")
    assert "<script" not in text.lower() and "<img" not in text.lower()
    hostile_job = '{"command": "echo </pre><script>alert(1)</script>"}'
    job_doc = Document(render(synthetic_report(3), hostile_job))
    assert not job_doc.find("script")
    assert "".join(job_doc.find("pre", "job-file")[0].text) == hostile_job


def test_the_document_is_self_contained(small):
    _, text, doc = small
    assert not doc.find("link") and not doc.find("script") and not doc.find("iframe")
    assert not [e for e in doc.elements if {"src", "href", "xlink:href"} & set(e.attrs)]
    assert "@import" not in text and "http" not in text  # the synthetic report names no URL
    assert set(re.findall(r"url\(([^)]*)\)", text)) <= {"#p-failed", "#p-straggler"}
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")


def test_the_histogram_counts_every_duration_and_names_the_stragglers():
    report = synthetic_report(60, straggler_every=50)  # tasks 5 and 55 run 8 times longer
    doc = Document(render(report))
    bars = [b for b in doc.find("rect", "hist-bar") if "data-count" in b.attrs]
    assert sum(int(b.attrs["data-count"]) for b in bars) == 60
    assert sum(int(b.attrs["data-stragglers"]) for b in bars) == 2
    assert [li.attrs["data-task"] for li in doc.find("li", "straggler")] in (["t000055", "t000005"],
                                                                            ["t000005", "t000055"])
    assert doc.find("rect", "straggler")


def test_every_field_is_optional():
    for report in ({}, {"entries": "nope", "tasks": 3, "usage": [], "cost": "x", "warnings": {}},
                   {"entries": [None, 3, {"task_id": "t0", "start_time": "garbage", "end_time": 5}],
                    "timings": {"created_at": 17}}):
        doc = Document(render(report, None))
        assert doc.find("section", id="summary") and doc.find("section", id="failures")
        assert not doc.find("rect", "task")


def test_the_cost_omitted_reason_is_shown():
    report = synthetic_report(3) | {"cost_omitted": "the price table (eastus, 2026-12-02) has no price for 'X'"}
    del report["cost"]
    (cost,) = Document(render(report)).find("div", data_metric="cost")
    assert "not estimated" in "".join(cost.text) and "has no price for 'X'" in "".join(cost.text)


def test_tasks_without_a_slot_are_packed_into_lanes_without_overlap():
    report = synthetic_report(3)
    for e, (start, end) in zip(report["entries"], [(0, 10), (5, 15), (12, 20)]):
        e.update(node_id="n1", start_time=iso(T0 + timedelta(seconds=start)), end_time=iso(T0 + timedelta(seconds=end)))
        del e["slot"]
    doc = Document(render(report))
    assert [g.attrs["data-slot"] for g in doc.find("g", "lane")] == ["~0", "~1"]


def test_stopped_and_never_started_tasks():
    report = synthetic_report(4)
    report["entries"][0].update(outcome="failed", failure={"category": "incomplete", "code": "TaskNotCompleted"})
    for key in ("start_time", "end_time"):
        del report["entries"][1][key]
    doc = Document(render(report))
    assert "stopped" in doc.find("rect", data_task="t000000")[0].classes
    assert len(doc.find("rect", "task")) == 3
    assert any("1 task(s) reported no start and end time" in "".join(p.text) for p in doc.find("p", "note"))


def test_hostile_text_never_breaks_the_encoding():
    report = synthetic_report(4)
    report["entries"][3]["stderr_tail"] = "nul \x00 bell \x07 lone surrogate \ud800 emoji \U0001f600"
    text = render(report)
    text.encode("utf-8")  # a lone surrogate would raise here
    assert "\x00" not in text and "\U0001f600" in text


def test_many_failures_show_the_first_ones_whole_and_name_the_rest():
    report = synthetic_report(50, fail_every=1)
    doc = Document(render(report, limits=Limits(failures=5, failure_names=10)))
    assert len(doc.find("li", "failure")) == 5
    (more,) = doc.find("p", "more-failures")
    assert more.attrs["data-count"] == "45" and "t000014" in "".join(more.text) and "and 35 more" in "".join(more.text)


def test_the_stream_comes_in_bounded_chunks(small):
    report, text, _ = small
    chunks = list(iter_html(report, JOB_FILE, Limits(chunk_chars=4096)))
    assert "".join(chunks) == text and len(chunks) > 3
    assert max(len(c) for c in chunks[:-1]) < 4096 + 2000  # a chunk closes right after it passes the size


def test_aggregation_kicks_in_at_20000_tasks_and_the_file_stays_small(large):
    report, text = large
    doc = Document(text)
    (timeline,) = doc.find("svg", "timeline")
    assert timeline.attrs["data-mode"] == "bins" and timeline.attrs["data-drawn"] == "20000"
    assert not doc.find("rect", "task")
    bins = doc.find("rect", "bin")
    assert 0 < len(bins) <= DEFAULT_LIMITS.bins
    assert any(int(b.attrs["data-failed"]) for b in bins if "failed" in b.classes)
    assert len(text.encode()) < 3 * 1024 * 1024
    assert len(doc.find("li", "failure")) == DEFAULT_LIMITS.failures


def test_lanes_are_merged_when_there_are_too_many():
    report = synthetic_report(400, nodes=40, slots=2)
    doc = Document(render(report, limits=Limits(task_bars=100, lanes=30)))
    lanes = doc.find("g", "lane")
    assert len(lanes) <= 30 and all("data-nodes" in g.attrs for g in lanes)  # 80 slots > 40 nodes > 30: groups
    doc = Document(render(report, limits=Limits(task_bars=100, lanes=50)))
    assert len(doc.find("g", "lane")) == 40 and all("data-slot" not in g.attrs for g in doc.find("g", "lane"))


def test_rendering_needs_memory_for_a_small_record_per_task_not_for_the_document():
    n = 5000  # aggregated like 20,000 (benchmarks/report_html_20k.py measures that); tracemalloc is slow
    report = synthetic_report(n, nodes=25, fail_every=100)
    size = 0
    tracemalloc.start()
    try:
        for chunk in iter_html(report, JOB_FILE):
            size += len(chunk)  # each chunk dropped once counted: only the renderer's memory is measured
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > 500_000
    assert peak < 400 * n + 1024 * 1024, peak


def test_any_junk_in_the_report_still_renders():
    rnd = random.Random(3)
    junk = [None, True, -1, 0, 10**400, 1e308, float("nan"), "", "x", "2026-11-28T10:00:00Z", "0001-01-01T00:00:00",
            "9999-12-31T23:59:59Z", [], {}, {"category": "incomplete"}, "\ud800<", -5.5]
    keys = ["task_id", "outcome", "exit_code", "retries", "requeues", "start_time", "end_time", "node_id", "slot",
            "failure", "stderr_tail", "infra_retries", "duration_s"]
    top = ["run_id", "state", "tasks", "timings", "warnings", "error", "output", "output_bytes", "output_sha256",
           "usage", "cost", "cost_omitted"]
    for _ in range(300):
        report: dict = {k: rnd.choice([*junk, {"wall_s": rnd.choice(junk), "amount": rnd.choice(junk),
                                               "created_at": rnd.choice(junk)}]) for k in top if rnd.random() < 0.7}
        report["entries"] = [{k: rnd.choice(junk) for k in keys if rnd.random() < 0.7} for _ in range(rnd.randint(0, 8))]
        render(report, rnd.choice([None, "", "\ud800"])).encode()
