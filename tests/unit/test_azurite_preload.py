"""scripts/azurite_preload.js, the preload that keeps Azurite answering with many blobs: a
removal of a few documents no longer takes LokiJS's re-sorting batch path, the GC's sweep of
unused extents removes them in one batch and its listing of extents looks at each once (each
leaves or finds the same documents as the stock path), and the GC sees every blob in use however
their names repeat across containers (checked in Node
against the LokiJS and Azurite modules that Azurite loads)."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from scripts.devstack import AZURITE_PRELOAD, ROOT, azurite_environment


def run_node(script: str, *args: str) -> dict:
    """`script` in Node with the repository root and the preload's path as its first arguments; the
    JSON it prints."""
    out = subprocess.run(["node", "-e", script, str(ROOT), str(AZURITE_PRELOAD), *args], capture_output=True,
                         text=True, check=True, timeout=120)
    return json.loads(out.stdout)


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
    found = run_node(SCRIPT)
    stock, patched = found["stock"], found["patched"]
    assert stock["singles"] == 20 and patched["singles"] == 0  # one re-sort per removal before, none now
    assert patched["batches"] == 1  # a large removal keeps LokiJS's own path
    assert patched["left"] == stock["left"] and len(patched["left"]) == 2000 - 20 + 5 - 500
    assert patched["byName"] == stock["byName"] == 0 and patched["indexed"] == stock["indexed"]


def test_azurite_is_started_with_the_preload():
    env = azurite_environment({"PATH": "/usr/bin", "NODE_OPTIONS": "--max-old-space-size=4096"})
    assert env["NODE_OPTIONS"] == f'--max-old-space-size=4096 --require "{AZURITE_PRELOAD}"'


# Azurite's in-memory extent store and extent metadata, with 5,000 extents; the scripts after it use them
EXTENTS = r"""
const path = require("path");
const [root, preload] = process.argv.slice(1);
const dist = path.join(root, "node_modules/azurite/dist/src");
const loki = require(require.resolve("lokijs", { paths: [dist] }));
const Store = require(path.join(dist, "common/persistence/MemoryExtentStore.js")).default;
const Meta = require(path.join(dist, "common/persistence/LokiExtentMetadataStore.js")).default;
const All = require(path.join(dist, "common/persistence/AllExtentsAsyncIterator.js")).default;
const stockSweep = Store.prototype.deleteExtents;
const calls = { remove: 0, batches: 0, lt: 0 };
for (const [name, key] of [["remove", "remove"], ["removeBatchByPositions", "batches"]]) {
  const original = loki.Collection.prototype[name];
  loki.Collection.prototype[name] = function (...a) { calls[key]++; return original.apply(this, a); };
}
const lt = loki.LokiOps.$lt;
loki.LokiOps.$lt = function (a, b) { calls.lt++; return lt(a, b); };
async function extents() {
  const meta = new Meta("unused.db", true);  // in memory: nothing is written
  await meta.init();
  const coll = meta.db.getCollection(meta.EXTENTS_COLLECTION);
  const now = Date.now();
  for (let i = 0; i < 5200; i++) {
    // most old, some new (the GC's protect time keeps them), some without the field (as Azurite inserts them)
    const age = i % 13 === 0 ? undefined : i % 11 === 0 ? now : now - 3600e3 + i;
    coll.insert({ id: "e" + String((i * 7919) % 5200).padStart(5, "0"), locationId: "l", path: "p", size: 1,
                  LastModifyInMS: age });
  }
  for (let i = 0; i < 200; i++) coll.remove(coll.data[i * 20]);  // gaps in $loki
  return [meta, coll];
}
"""

SWEEP = EXTENTS + r"""
async function sweep(patched) {
  const [meta, coll] = await extents();
  const dropped = new Set();
  const store = Object.create(Store.prototype);
  Object.assign(store, { metadataStore: meta, categoryName: "blob", logger: { info() {}, debug() {} },
                         chunks: { get: () => ({}), delete: (c, id) => dropped.add(id), totalSize: () => 0 } });
  const unused = new Set(coll.find().filter((d, k) => k % 5 === 0).map((d) => d.id));
  calls.remove = calls.batches = 0;
  const count = await (patched ? Store.prototype.deleteExtents : stockSweep).call(store, unused);
  return { count, remove: calls.remove, batches: calls.batches, dropped: dropped.size,
           left: coll.find().map((d) => d.id).sort(), byId: coll.find({ id: Array.from(unused)[0] }).length };
}
(async () => {
  process.argv[1] = path.join(dist, "azurite.js");
  require(preload);
  console.log(JSON.stringify({ stock: await sweep(false), patched: await sweep(true) }));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_the_gc_sweep_removes_what_the_stock_sweep_removes_in_one_batch():
    found = run_node(SWEEP)
    stock, patched = found["stock"], found["patched"]
    assert stock["count"] == patched["count"] == 1000 and stock["dropped"] == patched["dropped"] == 1000
    assert patched["left"] == stock["left"] and len(patched["left"]) == 4000
    assert patched["byId"] == stock["byId"] == 0  # the id index is right after the batch
    assert stock["remove"] == 1000 and stock["batches"] == 0  # one walk of the index per extent before
    assert patched["remove"] == 0 and patched["batches"] == 1


LISTING = EXTENTS + r"""
async function list(patched) {
  if (patched) { process.argv[1] = path.join(dist, "azurite.js"); require(preload); }
  const [meta] = await extents();
  const iter = new All(meta);  // the GC's listing: pages of 1,000 older than the protect time
  const pages = [];
  calls.lt = 0;
  for (let res = await iter.next(); res.done === false || res.value.length > 0; res = await iter.next()) {
    pages.push(res.value);
  }
  return { pages, lt: calls.lt, byId: (await meta.listExtents("e00007"))[0].map((d) => d.id) };
}
(async () => console.log(JSON.stringify({ stock: await list(false), patched: await list(true) })))();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_the_gc_lists_the_same_extents_looking_at_each_once():
    found = run_node(LISTING)
    stock, patched = found["stock"], found["patched"]
    assert patched["pages"] == stock["pages"]  # the same ids, pages and order
    listed = [i for page in stock["pages"] for i in page]
    assert 4000 < len(listed) == len(set(listed)) < 5000  # the new ones are left out, those without a time not
    assert stock["lt"] >= 4 * 5000  # every page looked at every extent: quadratic in the extents
    assert patched["lt"] <= 5000
    assert patched["byId"] == stock["byId"] == ["e00007"]


# Azurite's own blob metadata store, in memory, with the preload when the third argument is "yes":
# the scripts after it use `dist` and `inMemoryStore()`
AZURITE_STORE = r"""
const path = require("path");
const [root, preload, patched] = process.argv.slice(1);
const dist = path.join(root, "node_modules/azurite/dist/src");
if (patched === "yes") { process.argv[1] = path.join(dist, "azurite.js"); require(preload); }
const Store = require(path.join(dist, "blob/persistence/LokiBlobMetadataStore.js")).default;
async function inMemoryStore() {
  const store = new Store("unused.db", true);  // in memory: nothing is written
  await store.init();
  return [store, store.db.getCollection(store.BLOBS_COLLECTION)];
}
"""


REFERRED = AZURITE_STORE + r"""
const Referred = require(path.join(dist, "blob/persistence/BlobReferredExtentsAsyncIterator.js")).default;
(async () => {
  const [store, blobs] = await inMemoryStore();
  // 600 containers holding the same 20 names, as every run's work container does: 12,000 blobs
  for (let c = 0; c < 600; c++) for (let t = 0; t < 20; t++) {
    blobs.insert({ accountName: "a", containerName: "run-" + c, name: "tasks/t" + String(t).padStart(6, "0"),
                   snapshot: "", isCommitted: true, properties: {}, persistency: { id: "x" + c + "-" + t } });
  }
  blobs.insert({ accountName: "a", containerName: "snap", name: "s", snapshot: "2026", isCommitted: false,
                 properties: {}, persistency: { id: "snapshot-extent" } });
  const seen = new Set();
  const iter = new Referred(store);
  for (let res = await iter.next(); res.done === false || res.value.length > 0; res = await iter.next()) {
    for (const id of res.value) seen.add(id);
  }
  console.log(JSON.stringify({ referred: seen.size }));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_the_gc_finds_every_blob_in_use_when_names_repeat_across_containers():
    def referred(patched: str) -> int:
        return run_node(REFERRED, patched)["referred"]
    assert referred("no") < 12_001  # Azurite's own listing skips the blobs named as a page's last one
    assert referred("yes") == 12_001  # every blob's data, the snapshot's and the uncommitted one's too


PREFIX_LISTING = r"""
const path = require("path");
const [root, preload] = process.argv.slice(1);
const entry = path.join(root, "node_modules/azurite/dist/src/azurite.js");
const loki = require(require.resolve("lokijs", { paths: [path.dirname(entry)] }));
const regex = loki.LokiOps.$regex;
let tested = 0;
loki.LokiOps.$regex = function (a, b) { tested++; return regex(a, b); };
function run() {
  const db = new loki("m");
  const blobs = db.addCollection("$BLOBS_COLLECTION$", { indices: ["accountName", "containerName", "name", "snapshot"] });
  const other = db.addCollection("$CONTAINERS_COLLECTION$", { indices: ["accountName", "name"] });
  for (let i = 0; i < 20000; i++) {
    const name = (i % 7 === 0 ? "active/" : "tasks/") + String(i).padStart(6, "0");
    blobs.insert({ accountName: "devstoreaccount1", containerName: "c" + (i % 50), name, snapshot: "" });
    other.insert({ accountName: "devstoreaccount1", name: "c" + i });
  }
  // the query of Azurite's listBlobs, in its key order
  const query = { name: { $regex: /^active\// }, accountName: "devstoreaccount1", containerName: "c7" };
  tested = 0;
  const listed = blobs.chain().find(query).simplesort("name").data().map((d) => d.name);
  const listingTests = tested;
  tested = 0;
  const containers = other.chain().find({ name: { $regex: /^c19/ }, accountName: "devstoreaccount1" }).data().length;
  return { listed, listingTests, containers, containerTests: tested };
}
const stock = run();
process.argv[1] = entry;
require(preload);
console.log(JSON.stringify({ stock, patched: run() }));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_a_prefix_listing_looks_at_its_containers_blobs_only_and_lists_the_same():
    found = run_node(PREFIX_LISTING)
    stock, patched = found["stock"], found["patched"]
    assert patched["listed"] == stock["listed"] and len(stock["listed"]) == 58  # c7's "active/" blobs
    assert stock["listingTests"] == 20000  # the regex ran over every container's blobs
    assert patched["listingTests"] == 400  # c7's own
    # another collection's query is left as it was
    assert patched["containers"] == stock["containers"] == 1111  # c19, c190-c199, c1900-c1999
    assert patched["containerTests"] == stock["containerTests"] == 20000


STORE_QUERIES = AZURITE_STORE + r"""
(async () => {
  const [, blobs] = await inMemoryStore();
  for (let i = 0; i < 6000; i++) {
    blobs.insert({ accountName: "a" + (i % 2), containerName: "c" + (i % 30), name: "b" + (i % 700),
                   snapshot: i % 500 === 0 ? "2026" : "" });
  }
  const ids = (q) => blobs.find(q).map((d) => d.$loki).sort((x, y) => x - y);
  console.log(JSON.stringify({
    indexes: Object.keys(blobs.binaryIndices).sort(),
    container: ids({ accountName: "a1", containerName: "c7" }),
    blob: ids({ accountName: "a0", containerName: "c4", name: "b4" }),
    one: blobs.findOne({ name: "b500", accountName: "a0", containerName: "c20", snapshot: "2026" }).$loki,
    later: ids({ containerName: "c3", name: { $gt: "b69" } }),
    none: ids({ containerName: "c3", name: undefined }),
  }));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_blob_queries_find_the_same_without_the_indexes_that_never_narrow():
    stock, patched = run_node(STORE_QUERIES, "no"), run_node(STORE_QUERIES, "yes")
    assert stock.pop("indexes") == ["accountName", "containerName", "name", "snapshot"]
    assert patched.pop("indexes") == ["containerName", "name"]  # every insert and removal updated four
    assert patched == stock
    assert len(stock["container"]) == 200 and len(stock["blob"]) > 0 and stock["none"] == []
