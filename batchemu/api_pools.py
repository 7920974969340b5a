"""REST handlers for pools, their nodes and node counts.

Guarantees: conditional headers, where the operation takes them, are checked before the change is made;
responses carry the pool's current ETag/Last-Modified. Nodes are the emulator's virtual nodes: a node is
``running`` while a try runs on it, ``idle`` otherwise.
"""
from __future__ import annotations

from .errors import err
from .odata import apply_select, parse_select
from .responses import _empty, _json, _lm
from . import validation as V


class PoolsApiMixin:
    """Pool and node handlers of `App`."""

    def create_pool(self, req):
        body = self.parse_body(req, V.POOL_CREATE)
        p = self.engine.create_pool(body)
        url = f"{req.base}/pools/{p.id}"
        return _empty(201, {"ETag": p.etag, "Last-Modified": _lm(p.last_modified), "Location": url,
                            "DataServiceId": url})

    def list_pools(self, req):
        eng = self.engine
        with eng.lock:
            items = [eng.pool_json(p, req.base) for p in eng.pools.values()]
        return self._dict_page(req, items, "pools")

    def get_pool(self, req, pool_id):
        with self.engine.lock:
            p = self.engine.get_pool(pool_id)
            self.conditions(req, p.etag, p.last_modified)
            d = self.engine.pool_json(p, req.base)
        return _json(200, apply_select(d, parse_select(req.query.get("$select"))),
                     {"ETag": d["eTag"], "Last-Modified": _lm(d["lastModified"])})

    def pool_exists(self, req, pool_id):
        with self.engine.lock:
            p = self.engine.pools.get(pool_id.lower())
            if p is None:
                return _empty(404)
            self.conditions(req, p.etag, p.last_modified)
            return _empty(200, {"ETag": p.etag, "Last-Modified": _lm(p.last_modified)})

    def patch_pool(self, req, pool_id):
        body = self.parse_body(req, V.POOL_PATCH)
        self.checked(req, self.engine.get_pool, pool_id)
        self.engine.patch_pool(pool_id, body)
        return self.written(req, self.engine.pools, "pools", pool_id, 200)

    def replace_pool(self, req, pool_id):
        body = self.parse_body(req, V.POOL_REPLACE)
        self.engine.replace_pool_properties(pool_id, body)
        return self.written(req, self.engine.pools, "pools", pool_id, 204)

    def delete_pool(self, req, pool_id):
        self.checked(req, self.engine.get_pool, pool_id)
        self.engine.delete_pool(pool_id)
        return _empty(202)

    def resize_pool(self, req, pool_id):
        body = self.parse_body(req, V.POOL_RESIZE)
        self.checked(req, self.engine.get_pool, pool_id)
        self.engine.resize_pool(pool_id, body)
        return self.written(req, self.engine.pools, "pools", pool_id, 202)

    def stop_resize(self, req, pool_id):
        self.checked(req, self.engine.get_pool, pool_id)
        self.engine.stop_resize(pool_id)
        return self.written(req, self.engine.pools, "pools", pool_id, 202)

    def enable_autoscale(self, req, pool_id):
        body = self.parse_body(req, V.POOL_ENABLE_AS)
        self.checked(req, self.engine.get_pool, pool_id)
        self.engine.enable_autoscale(pool_id, body)
        return self.written(req, self.engine.pools, "pools", pool_id, 200)

    def disable_autoscale(self, req, pool_id):
        self.engine.disable_autoscale(pool_id)
        return self.written(req, self.engine.pools, "pools", pool_id, 200)

    def evaluate_autoscale(self, req, pool_id):
        body = self.parse_body(req, V.POOL_EVAL_AS)
        run = self.engine.evaluate_autoscale(pool_id, body)
        return _json(200, run, {"DataServiceId": f"{req.base}/pools/{pool_id}/evaluateautoscale"})

    def _node_json(self, req, p, n):
        eng = self.engine
        running = [r for j in eng.jobs.values() for r in j.runs if r.node.id == n.id]
        return {"id": n.id, "url": f"{req.base}/pools/{p.id}/nodes/{n.id}",
                "state": "running" if running else "idle", "schedulingState": "enabled",
                "stateTransitionTime": p.alloc_time, "lastBootTime": p.creation_time, "allocationTime": p.alloc_time,
                "ipAddress": "127.0.0.1", "affinityId": f"TVM:{n.id}", "vmSize": p.spec.get("vmSize"),
                "runningTasksCount": len(running), "runningTaskSlotsCount": sum(r.slots for r in running),
                "isDedicated": n.dedicated,
                "recentTasks": [{"taskUrl": f"{req.base}/jobs/{r.job.id}/tasks/{r.task.id}", "jobId": r.job.id,
                                 "taskId": r.task.id, "taskState": r.task.state} for r in running]}

    def list_nodes(self, req, pool_id):
        with self.engine.lock:
            p = self.engine.get_pool(pool_id)
            items = [self._node_json(req, p, n) for n in p.nodes]
        return self._dict_page(req, items, "nodes")

    def get_node(self, req, pool_id, node_id):
        with self.engine.lock:
            p = self.engine.get_pool(pool_id)
            n = next((n for n in p.nodes if n.id == node_id), None)
            if n is None:
                raise err("NodeNotFound")
            d = self._node_json(req, p, n)
        return _json(200, apply_select(d, parse_select(req.query.get("$select"))))

    def node_counts(self, req):
        with self.engine.lock:
            items = []
            for p in self.engine.pools.values():
                def counts(ded):
                    nodes = [n for n in p.nodes if n.dedicated == ded]
                    busy = sum(1 for n in nodes if n.used)
                    return {"creating": 0, "idle": len(nodes) - busy, "offline": 0, "preempted": 0, "rebooting": 0,
                            "reimaging": 0, "running": busy, "starting": 0, "startTaskFailed": 0, "leavingPool": 0,
                            "unknown": 0, "unusable": 0, "waitingForStartTask": 0, "deallocated": 0,
                            "deallocating": 0, "total": len(nodes), "upgradingOS": 0}
                items.append({"poolId": p.id, "dedicated": counts(True), "lowPriority": counts(False)})
        return self._dict_page(req, items, "nodecounts")
