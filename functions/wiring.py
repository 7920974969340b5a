"""The pipeline context, built once per worker process from the app settings."""
from __future__ import annotations

import functools
import os

from shared.context import Context
from shared.settings import Settings


@functools.lru_cache(maxsize=1)
def context() -> Context:
    settings = Settings.from_mapping(os.environ)
    ctx = Context.build(settings, os.environ)
    ctx.ensure_containers()
    return ctx


def intake_source(env=os.environ):
    """Event Grid in Azure (INTAKE_SOURCE=EventGrid); container polling elsewhere (Azurite, Core Tools)."""
    import azure.functions as func

    if env.get("INTAKE_SOURCE", "").replace(" ", "").lower() == "eventgrid":
        return func.BlobSource.EVENT_GRID
    return func.BlobSource.LOGS_AND_CONTAINER_SCAN
