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
// What, 2: even in place, each removal still walks the whole index (1.9 ms among 600,000 extents),
// and the in-memory extent store's GC sweep removed every unused extent in turn without once letting a
// request in: 200,000 unused extents held Azurite's one thread for about 370 s. The sweep now drops
// them in one LokiJS batch, whose single index rebuild takes 1.2 s at that size. It does not yield,
// as Azurite's own sweep does not: a request between mark and sweep could not make an unused extent
// used again, but one inside the mark could move a reference to where the mark has already looked.
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
// What, 6: the GC lists every extent in pages of 1,000 with the query {LastModifyInMS: {$lt}, $loki:
// {$gt: marker}}, which LokiJS answers by scanning the whole collection (no index on LastModifyInMS)
// for each page: with 600,000 extents the listing took 45.5 s on a quiet machine, Azurite answering
// nothing (the 90-139 s silences of our 100,000-task runs, every GC). A page now starts at its marker
// (a binary search on $loki, as What, 3) and applies the same condition from there: 0.22 s.
// Nothing on disk is changed, and the patches apply only inside Azurite's own process.
"use strict";
const fs = require("fs");
const path = require("path");

const FEW = 64;
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
    const docs = [];
    const start = firstAfter(data, marker ? parseInt(marker, 10) : 0);
    for (let i = start; i < data.length && docs.length <= maxResults; i++) {
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
    const unused = extents instanceof Set ? extents : new Set(extents);
    for (const id of unused) {
      if (this.chunks.get(this.categoryName, id)) {
        this.chunks.delete(this.categoryName, id);
      }
    }
    const store = this.metadataStore;  // as Azurite 3.37 removes them, findAndRemove({id}) each, in one batch
    const coll = store.db.getCollection(store.EXTENTS_COLLECTION);
    const positions = [];
    coll.data.forEach((doc, position) => {
      if (unused.has(doc.id)) positions.push(position);
    });
    if (positions.length > 0) {
      coll.removeBatchByPositions(positions);
    }
    return unused.size;
  };

  const ExtentMetadata = require(path.join(dist, "common/persistence/LokiExtentMetadataStore.js")).default;
  const listExtents = ExtentMetadata.prototype.listExtents;
  ExtentMetadata.prototype.listExtents = async function (id, maxResults = 5000, marker, queryTime,
                                                         protectTimeInMs = 0) {
    if (id !== undefined) {
      return listExtents.call(this, id, maxResults, marker, queryTime, protectTimeInMs);
    }
    const data = this.db.getCollection(this.EXTENTS_COLLECTION).data; // in $loki order
    const start = firstAfter(data, marker === undefined ? 0 : marker);
    const before = queryTime === undefined ? undefined : queryTime.getTime() - protectTimeInMs;
    const docs = [];
    for (let i = start; i < data.length && docs.length < maxResults; i++) {
      // LokiJS's own $lt, so that an extent without LastModifyInMS counts as old, as in Azurite's query
      if (before === undefined || loki.LokiOps.$lt(data[i].LastModifyInMS, before)) {
        docs.push(data[i]);
      }
    }
    return docs.length < maxResults ? [docs, undefined] : [docs, docs[docs.length - 1].$loki];
  };
}

// The position of the first document of `data` (in $loki order) whose $loki is above `after`.
function firstAfter(data, after) {
  let lo = 0;
  let hi = data.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (data[mid].$loki <= after) lo = mid + 1;
    else hi = mid;
  }
  return lo;
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
