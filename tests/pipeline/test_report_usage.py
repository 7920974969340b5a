"""report.json's per-task times, nodes and tries, the run's usage and cost, and report.html, on
real runs (issue 11): a task that needs its retry, a preempted task, a failed one."""
from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from shared.accept import accept
from tests.pipeline.helpers import COPY, drop, results_blob, run_to_end, wait_for
from tests.pipeline.test_reliability import inject

# task 1 fails its first try (a marker file says it was tried: in TMPDIR, not on the node, since the
# retry may run on another node of the pool)
FLAKY = ('m="${TMPDIR:-/tmp}/flaky-$AZ_BATCH_JOB_ID-$TASK_INDEX"; '
         'if [ "$TASK_INDEX" = 1 ] && [ ! -e "$m" ]; then touch "$m"; exit 5; fi; ' + COPY)


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


def elements(html: bytes) -> list[tuple[str, dict]]:
    parser = Elements()
    parser.feed(html.decode("utf-8"))
    return parser.found


def test_report_has_times_nodes_tries_usage_and_cost_and_a_page(ctx, batch, batch_emulator):
    d = drop(ctx, "usage.json", {"command": 'sleep 0.3; ' + FLAKY, "input": {"items": list(range(4))},
                                 "retries": 1})
    accept(ctx, d.container, d.name)
    wait_for(lambda: batch.get_task(d.run_id, "t000002").state == "running", what="task running")
    inject(batch_emulator, d.run_id, "t000002", "preempt")
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "succeeded", final
    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    entries = {e["task_id"]: e for e in report["entries"]}
    for e in entries.values():
        assert e["start_time"].endswith("Z") and e["end_time"] >= e["start_time"] and e["node_id"]
    assert entries["t000001"]["retries"] == 1 and entries["t000001"]["tries"] == 2
    assert entries["t000002"]["requeues"] >= 1
    usage = report["usage"]
    assert usage["wall_s"] > 0 and usage["queue_s"] is not None and usage["busy_slot_s"] > 0
    assert usage["node_s_dedicated"] > 0 and usage["node_s_spot"] == 0
    assert 0 < usage["efficiency"]
    # the emulator's auto pool is standard_d2s_v3 by default: a price the shipped table has
    # seconds of a small VM: the amount (to 1/100 of a cent) is the node time at the table's price
    assert report["cost"]["amount"] == pytest.approx(usage["node_s_dedicated"] / 3600 * 0.096, abs=1e-4)
    assert report["cost"]["currency"] == "USD"
    assert report["cost"]["vm_size"].lower() == "standard_d2s_v3"
    page = results_blob(ctx, f"{d.run_id}/report.html")
    drawn = elements(page)
    bars = [a for tag, a in drawn if tag == "rect" and "task" in (a.get("class") or "").split()]
    assert sorted(a["data-task"] for a in bars) == ["t000000", "t000001", "t000002", "t000003"]
    assert any("retried" in (a.get("class") or "") for a in bars if a["data-task"] == "t000001")
    assert not [tag for tag, _ in drawn if tag in ("script", "img", "link")]


def test_a_failed_task_is_listed_with_its_stderr_on_the_page(ctx):
    d = drop(ctx, "usage-fail.json", {"command": 'echo "<b>boom</b>" >&2; exit 4', "input": {"items": [1]},
                                      "retries": 0})
    accept(ctx, d.container, d.name)
    assert run_to_end(ctx, d.run_id)["state"] == "failed"
    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    assert report["entries"][0]["failure"]["category"].lower() == "usererror"
    page = results_blob(ctx, f"{d.run_id}/report.html")
    assert b'data-task="t000000"' in page and b"&lt;b&gt;boom&lt;/b&gt;" in page and b"<b>boom</b>" not in page


def test_a_pool_the_job_file_named_has_no_cost_and_says_why(ctx, batch):
    from azure.batch import models as bm

    batch.create_pool(bm.BatchPoolCreateOptions(
        id="usage-shared", vm_size="standard_d2s_v3", target_dedicated_nodes=1,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(publisher="canonical", offer="ubuntu", sku="22_04-lts"),
            node_agent_sku_id="batch.node.ubuntu 22.04")))
    try:
        d = drop(ctx, "usage-pool.json", {"command": COPY, "input": {"items": [1]}, "pool": {"id": "usage-shared"}})
        accept(ctx, d.container, d.name)
        assert run_to_end(ctx, d.run_id)["state"] == "succeeded"
        report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
        assert "cost" not in report and "shared with other work" in report["cost_omitted"]
    finally:
        batch.begin_delete_pool("usage-shared").result()
