"""Every name the pipeline derives for a run: work containers, task ids, shards, the owner tag.

Pure functions of their arguments, so intake, finalize, cleanup and the sweep always agree on
them. (Run ids themselves are derived in `jobfile`, from the job file's blob identity.)
"""
from __future__ import annotations

# Azure Storage: container names are at most 63 characters.
_CONTAINER_MAX = 63
# Metadata key marking a container as a run's work container; its value is the run id.
WORK_METADATA = "batchdroprun"


def work_containers(prefix: str, run_id: str) -> tuple[str, str]:
    """(input container, output container) of a run: separate, so task SAS can be read-only /
    write-only.

    "<prefix>-<name>-<hex>-in" / "-out": the run id's hex part keeps them unique, and its name
    part is shortened as needed so the result is a valid container name (at most 63 characters,
    single hyphens) whatever the prefix and the run name's length.
    """
    name, _, digest = run_id.rpartition("-")
    room = _CONTAINER_MAX - len(prefix) - len(digest) - len("---out")
    short = name[:max(0, room)].strip("-")
    base = "-".join(part for part in (prefix, short, digest) if part)
    return f"{base}-in", f"{base}-out"


def is_work_container(prefix: str, container: str, tagged_run_id: str | None) -> bool:
    """Whether `container` is the work container of the run its metadata names: both the tag
    written at creation and the name derived from it must agree, so a user's container that
    merely shares the prefix is never taken for one."""
    return bool(tagged_run_id) and container in work_containers(prefix, tagged_run_id or "")


def task_id(index: int) -> str:
    """Zero-padded so that name order is task order."""
    return f"t{index:06d}"


def shard_name(index: int, input_file: str) -> str:
    """Where task `index`'s input lives in the run's input container."""
    return f"shards/{index:06d}.{input_file.rsplit('.', 1)[-1]}"


def owner_tag(blob_service_url: str, results_container: str) -> str:
    """Which deployment a Batch job belongs to: the URL of its results container (no SAS)."""
    return f"{blob_service_url.split('?', 1)[0].rstrip('/')}/{results_container}"
