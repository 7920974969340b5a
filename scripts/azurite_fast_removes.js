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
// What: findAndRemove of a few documents removes them one by one with Collection.remove, which
// updates the indexes in place (the same documents go, the same events fire); a large batch (a
// container's blobs) keeps LokiJS's own path, where one re-sort is the cheaper way. Nothing on
// disk is changed, and the patch applies only inside Azurite's own process.
"use strict";
const fs = require("fs");
const path = require("path");

const FEW = 64;

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
}
