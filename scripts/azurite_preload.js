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
// What, 3 (a data-loss fix): the GC finds the extents still in use by listing every blob in pages of
// 5,000 with the last *name* as the marker, across all containers; names repeat from container to
// container (every run's "tasks/t000004/output.jsonl"), so the blobs sharing the name at a page's end
// were never listed, and the sweep deleted their data: reading them answered 500 from then on (180
// task outputs in our 1,000-run benchmark, whose finalizes then retried for minutes). The listing now
// pages by the documents' unique, increasing $loki ids.
// What, 4: List Blobs with a prefix queries {name: {$regex}, accountName, containerName}; LokiJS
// applies the conditions in key order and uses an index only for the first, so every listing ran
// the regex over every blob of every container (with about 420,000 blobs, 48-76% of Azurite's CPU in
// our 100,000-task run went to the monitor's listing of a handful of control blobs each second).
// That query is now applied container first (through the containerName index), the regex last:
// the same documents, and listBlobs sorts them by name itself. Likewise a blob's or a container's
// delete ({accountName, containerName[, name]}) starts with the name, else the container.
// What, 5: the blobs collection keeps binary indexes on accountName and snapshot, which never narrow
// a query here (one account; snapshots are rare) but which every insert and removal updates: with
// 420,000 blobs an insert took 3.6 ms with them, 0.9 ms without (a fifth of Azurite's CPU in the
// 100,000-task run). They are dropped after the store starts.
// Nothing on disk is changed, and the patches apply only inside Azurite's own process.
"use strict";
const fs = require("fs");
const path = require("path");

const FEW = 64;
const SWEEP_YIELD = 16;
const NEVER_NARROW = ["accountName", "snapshot"];  // the blobs collection's indexes that go (What, 5)

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

  const Resultset = loki.Resultset;
  const find = Resultset.prototype.find;
  Resultset.prototype.find = function (query, firstOnly) {
    return find.call(this, narrowestFirst(this, query), firstOnly);
  };

  const dist = path.dirname(entry);
  const BlobStore = require(path.join(dist, "blob/persistence/LokiBlobMetadataStore.js")).default;
  // only the GC's BlobReferredExtentsAsyncIterator calls it, and hands back the marker it returned
  BlobStore.prototype.listAllBlobs = async function (maxResults = 5000, marker, includeSnapshots,
                                                     includeUncommittedBlobs) {
    const data = this.db.getCollection(this.BLOBS_COLLECTION).data; // in $loki order
    const after = marker ? parseInt(marker, 10) : 0;
    let lo = 0;
    let hi = data.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (data[mid].$loki <= after) lo = mid + 1;
      else hi = mid;
    }
    const docs = [];
    for (let i = lo; i < data.length && docs.length <= maxResults; i++) {
      const doc = data[i];
      if ((includeSnapshots || doc.snapshot.length === 0) && (includeUncommittedBlobs || doc.isCommitted)) {
        docs.push(doc);
      }
    }
    for (const doc of docs) {
      doc.properties.contentMD5 = this.restoreUint8Array(doc.properties.contentMD5);
    }
    if (docs.length <= maxResults) {
      return [docs, undefined];
    }
    docs.pop();
    return [docs, String(docs[docs.length - 1].$loki)];
  };

  const init = BlobStore.prototype.init;
  BlobStore.prototype.init = async function (...args) {
    await init.apply(this, args);
    const blobs = this.db.getCollection(this.BLOBS_COLLECTION);
    for (const property of NEVER_NARROW) {
      delete blobs.binaryIndices[property];
    }
  };

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

// A query of the blobs collection starts with the blob's name, else its container (What, 4); the
// conditions are ANDed, so the order changes which index narrows first, not what is found.
function narrowestFirst(resultset, query) {
  if (resultset.filterInitialized || resultset.collection.name !== "$BLOBS_COLLECTION$" || query === null ||
      typeof query !== "object" || typeof query.containerName !== "string") {
    return query;
  }
  const { name, containerName, ...rest } = query;
  if (typeof name === "string") {
    return { name, containerName, ...rest };
  }
  return "name" in query ? { containerName, ...rest, name } : { containerName, ...rest };
}
