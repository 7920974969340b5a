// Loaded into Azurite with NODE_OPTIONS="--require <this file>" (tests/services.py, scripts/devstack.py).
//
// Why: Azurite keeps its metadata in LokiJS, whose Collection.findAndRemove goes through
// removeBatchByPositions, and that re-sorts every binary index of the collection on every call,
// even to remove one document. Azurite removes that way when it deletes a blob and when its blob
// GC (every 10 minutes) drops each unused data extent: with about 100,000 blobs one removal takes
// 0.2-2 s, the GC removes them one after another without yielding, and Azurite answered nothing
// for minutes in our 100,000-task and 1,000-run benchmarks (README, Benchmarks). Azurite 3.37 has
// no setting for it.
//
// What, 1: findAndRemove of a few documents removes them one by one with Collection.remove, which
// updates the indexes in place (the same documents go, the same events fire); a large batch (a
// container's blobs) keeps LokiJS's own path, where one re-sort is the cheaper way.
// What, 2: even in place, each removal still walks the whole index (3.4 ms among 300,000 extents),
// and the in-memory extent store's GC sweep removes every unused extent in turn without once
// letting a request in (an `await` of a settled promise does not): with about 300,000 blobs Azurite
// stalled 135 and 170 s. The sweep now lets waiting requests in every SWEEP_YIELD removals (a
// LokiJS batch removal instead re-sorts the index: 3 s per batch at that size).
// Nothing on disk is changed, and the patches apply only inside Azurite's own process.
"use strict";
const fs = require("fs");
const path = require("path");

const FEW = 64;
const SWEEP_YIELD = 16;

let entry = "";
try {
  entry = fs.realpathSync(process.argv[1] || "");
} catch (e) {
  entry = "";
}
if (/azurite[\\/]dist[\\/]src[\\/]azurite\.js$/.test(entry)) {
  const loki = require(require.resolve("lokijs", { paths: [path.dirname(entry)] }));
  const Collection = loki.Collection;
  const batchRemove = Collection.prototype.findAndRemove;
  Collection.prototype.findAndRemove = function (filterObject) {
    const found = this.find(filterObject);
    if (found.length > FEW) {
      return batchRemove.call(this, filterObject);
    }
    for (const doc of found) {
      this.remove(doc);
    }
  };

  const dist = path.dirname(entry);
  const MemoryExtentStore = require(path.join(dist, "common/persistence/MemoryExtentStore.js")).default;
  MemoryExtentStore.prototype.deleteExtents = async function (extents) {
    let count = 0;
    for (const id of extents) {  // as Azurite 3.37 does, but letting waiting requests in every SWEEP_YIELD
      if (this.chunks.get(this.categoryName, id)) {
        this.chunks.delete(this.categoryName, id);
      }
      await this.metadataStore.deleteExtent(id);
      count++;
      if (count % SWEEP_YIELD === 0) {
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    return count;
  };
}
