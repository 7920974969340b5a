"""scripts/azurite_fast_removes.js, the preload that keeps Azurite answering with many blobs: a
removal of a few documents no longer takes LokiJS's re-sorting batch path, and leaves the same
documents as the stock path (checked in Node against the LokiJS that Azurite loads)."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from scripts.devstack import AZURITE_PRELOAD, ROOT, azurite_environment

SCRIPT = r"""
const path = require("path");
const [root, preload] = process.argv.slice(1);  // node -e: the arguments start at argv[1]
const entry = path.join(root, "node_modules/azurite/dist/src/azurite.js");
const loki = require(require.resolve("lokijs", { paths: [path.dirname(entry)] }));
function run() {
  const c = new loki("m").addCollection("blobs", { indices: ["containerName", "name"] });
  for (let i = 0; i < 2000; i++) c.insert({ containerName: "c" + (i % 4), name: "b" + i });
  let batches = 0;
  const batch = c.removeBatchByPositions;
  c.removeBatchByPositions = function (...a) { batches++; return batch.apply(this, a); };
  for (let i = 0; i < 20; i++) c.findAndRemove({ containerName: "c" + (i % 4), name: "b" + i });
  const singles = batches;
  c.findAndRemove({ containerName: "c1" });  // a container's other 495 blobs
  return { singles, batches: batches - singles, left: c.find().map((d) => d.name).sort(),
           byName: c.find({ name: "b21" }).length, indexed: c.find({ containerName: "c2" }).length };
}
const stock = run();
process.argv[1] = entry;
require(preload);
console.log(JSON.stringify({ stock, patched: run() }));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_few_removes_take_the_in_place_path_and_leave_what_the_stock_path_leaves():
    out = subprocess.run(["node", "-e", SCRIPT, str(ROOT), str(AZURITE_PRELOAD)], capture_output=True, text=True,
                         check=True, timeout=60)
    found = json.loads(out.stdout)
    stock, patched = found["stock"], found["patched"]
    assert stock["singles"] == 20 and patched["singles"] == 0  # one re-sort per removal before, none now
    assert patched["batches"] == 1  # a large removal keeps LokiJS's own path
    assert patched["left"] == stock["left"] and len(patched["left"]) == 2000 - 20 + 5 - 500
    assert patched["byName"] == stock["byName"] == 0 and patched["indexed"] == stock["indexed"]


def test_azurite_is_started_with_the_preload():
    env = azurite_environment({"PATH": "/usr/bin", "NODE_OPTIONS": "--max-old-space-size=4096"})
    assert env["NODE_OPTIONS"] == f'--max-old-space-size=4096 --require "{AZURITE_PRELOAD}"'
