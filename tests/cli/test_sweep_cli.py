"""`batchdrop validate` and `batchdrop plan` on a sweep job file (docs/jobfile.md, "Parameter sweeps"):
the sweep is described by its shape, counted without being listed, and sampled on its first combinations."""
from __future__ import annotations

import json

from tests.cli.test_plan import batchdrop, job, write_settings

SWEEP = {"alpha": [0.1, 0.2, 0.5], "seed": {"range": [0, 100]}, "model": ["a", "b"]}
# exits 9 unless the sample's input holds the sweep's first three combinations, in order
FIRST_THREE = ('printf \'%s\\n\' \'{"alpha":0.1,"seed":0,"model":"a"}\' \'{"alpha":0.1,"seed":0,"model":"b"}\' '
               '\'{"alpha":0.1,"seed":1,"model":"a"}\' | cmp -s - "$INPUT_PATH" || exit 9; '
               'cp "$INPUT_PATH" "$OUTPUT_PATH"')


def test_validate_describes_the_sweep(tmp_path):
    path = job(tmp_path, {"command": "true", "input": {"sweep": SWEEP}, "items_per_task": 10})
    result = batchdrop(write_settings(tmp_path), "validate", str(path))
    assert result.exit_code == 0, result.stderr
    assert ("a sweep of 600 combinations: alpha (3) x seed (100) x model (2), 10 per task, merge jsonl"
            in result.stdout)


def test_validate_names_the_bad_parameter(tmp_path):
    path = job(tmp_path, {"command": "true", "input": {"sweep": {**SWEEP, "seed": {"range": [0, 10 ** 12]}}}})
    result = batchdrop(write_settings(tmp_path), "validate", "--json", str(path))
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["valid"] is False and doc["field"] == "input.sweep.seed.range"


def test_plan_counts_the_sweep_and_samples_its_first_combinations(tmp_path):
    path = job(tmp_path, {"command": FIRST_THREE, "input": {"sweep": SWEEP}, "items_per_task": 10})
    result = batchdrop(write_settings(tmp_path), "plan", str(path), "--sample", "3", "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "running the job's command here on 3 of 600 items" in result.stderr
    doc = json.loads(result.stdout)
    assert doc["items"] == 600 and doc["items_source"] == "sweep: alpha (3) x seed (100) x model (2)"
    assert doc["current_items_per_task"] == 10
    assert (doc["sample"]["items"], doc["sample"]["runs"], doc["sample"]["no_output"]) == (3, 1, 0)
    assert 60 in [c["tasks"] for c in doc["candidates"] if c["items_per_task"] == 10]
