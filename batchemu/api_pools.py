"""REST handlers for pools, their nodes and node counts.

Guarantees: conditional headers, where the operation takes them, are handed to the engine, which checks
them under its lock against the version it changes; responses carry the ETag/Last-Modified of the version
written.
"""
from __future__ import annotations

from . import validation as V
from .api_core import AppCore
from .odata import apply_select, parse_select
from .request import Request
from .responses import Response, _empty, _json, _lm


class PoolsApiMixin(AppCore):
    """Pool and node handlers of `App`."""

    def create_pool(self, req: Request) -> Response:
        return self.created(req, self.engine.create_pool(self.parse_body(req, V.POOL_CREATE)))

    def list_pools(self, req: Request) -> Response:
        return self.dict_page(req, self.engine.pool_views(req.base), "pools")

    def get_pool(self, req: Request, pool_id: str) -> Response:
        return self.resource(req, self.engine.read_pool(pool_id, req.base, self.conditions(req)))

    def pool_exists(self, req: Request, pool_id: str) -> Response:
        stamp = self.engine.pool_stamp(pool_id, self.conditions(req))
        if stamp is None:
            return _empty(404)
        return _empty(200, {"ETag": stamp.etag, "Last-Modified": _lm(stamp.last_modified)})

    def patch_pool(self, req: Request, pool_id: str) -> Response:
        body = self.parse_body(req, V.POOL_PATCH)
        return self.written(req, self.engine.patch_pool(pool_id, body, self.conditions(req)), 200)

    def replace_pool(self, req: Request, pool_id: str) -> Response:
        body = self.parse_body(req, V.POOL_REPLACE)
        return self.written(req, self.engine.replace_pool_properties(pool_id, body), 204)

    def delete_pool(self, req: Request, pool_id: str) -> Response:
        self.engine.delete_pool(pool_id, self.conditions(req))
        return _empty(202)

    def resize_pool(self, req: Request, pool_id: str) -> Response:
        body = self.parse_body(req, V.POOL_RESIZE)
        return self.written(req, self.engine.resize_pool(pool_id, body, self.conditions(req)), 202)

    def stop_resize(self, req: Request, pool_id: str) -> Response:
        return self.written(req, self.engine.stop_resize(pool_id, self.conditions(req)), 202)

    def enable_autoscale(self, req: Request, pool_id: str) -> Response:
        body = self.parse_body(req, V.POOL_ENABLE_AS)
        return self.written(req, self.engine.enable_autoscale(pool_id, body, self.conditions(req)), 200)

    def disable_autoscale(self, req: Request, pool_id: str) -> Response:
        return self.written(req, self.engine.disable_autoscale(pool_id), 200)

    def evaluate_autoscale(self, req: Request, pool_id: str) -> Response:
        run = self.engine.evaluate_autoscale(pool_id, self.parse_body(req, V.POOL_EVAL_AS))
        return _json(200, run, {"DataServiceId": f"{req.base}/pools/{pool_id}/evaluateautoscale"})

    def list_nodes(self, req: Request, pool_id: str) -> Response:
        return self.dict_page(req, self.engine.node_views(pool_id, req.base), "nodes")

    def get_node(self, req: Request, pool_id: str, node_id: str) -> Response:
        d = self.engine.read_node(pool_id, node_id, req.base)
        return _json(200, apply_select(d, parse_select(req.query.get("$select"))))

    def node_counts(self, req: Request) -> Response:
        return self.dict_page(req, self.engine.node_counts(), "nodecounts")
