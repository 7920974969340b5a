"""checkov's Bicep and ARM checks over infra/, with every skip in infra/checkov-skips.yaml.

One checkov run without any skip; then: every failed check must be listed (for that resource)
in the skip file with a reason, and every entry of the skip file must still fail (no stale
skips). Parsing errors fail the test too. checkov runs from its own environment (tests/infra/
tools.py) with --skip-download: nothing is fetched from any service.
"""
from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.infra import tools
from tests.infra.bicep import INFRA

SKIPS = INFRA / "checkov-skips.yaml"


@pytest.fixture(scope="module")
def checkov_results():
    try:
        checkov = tools.ensure()
    except tools.ToolsUnavailable as e:
        pytest.fail(str(e))
    done = subprocess.run([str(checkov), "--directory", str(INFRA), "--framework", "bicep", "arm", "--output", "json",
                           "--quiet", "--compact", "--skip-download"], capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), f"checkov failed to run:\n{done.stderr[-3000:]}"
    runs = json.loads(done.stdout)
    return runs if isinstance(runs, list) else [runs]


def skip_entries() -> list[dict]:
    return yaml.safe_load(SKIPS.read_text())["skips"]


def test_skip_file_entries_have_reasons():
    seen = set()
    for entry in skip_entries():
        assert set(entry) == {"id", "resource", "reason"}, entry
        assert len(entry["reason"].split()) >= 6, f"{entry['id']}: say why"
        assert (entry["id"], entry["resource"]) not in seen, f"{entry['id']} {entry['resource']} listed twice"
        seen.add((entry["id"], entry["resource"]))


def test_checkov_parses_every_file(checkov_results):
    bicep = [r for r in checkov_results if r.get("check_type") == "bicep"]
    assert bicep, "checkov found no Bicep"
    summary = bicep[0]["summary"]
    assert summary["parsing_errors"] == 0, bicep[0]["results"].get("parsing_errors")
    assert summary["resource_count"] > 20 and summary["passed"] > 0


def test_every_failed_check_is_a_listed_skip_and_every_skip_still_fails(checkov_results):
    failed = {(f["check_id"], f["resource"]): f"{f['check_name']} ({f['file_path']})"
              for run in checkov_results for f in run["results"].get("failed_checks", [])}
    listed = {(e["id"], e["resource"]) for e in skip_entries()}
    unlisted = [f"{cid} on {res}: {why}" for (cid, res), why in sorted(failed.items()) if (cid, res) not in listed]
    stale = [f"{cid} on {res}" for cid, res in sorted(listed - set(failed))]
    assert not unlisted, "checkov checks that fail and are not in infra/checkov-skips.yaml:\n" + "\n".join(unlisted)
    assert not stale, "infra/checkov-skips.yaml lists checks that no longer fail (remove them):\n" + "\n".join(stale)
