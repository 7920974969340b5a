"""The outputs succeeded tasks left in the run's output container: checked against the manifests
their tasks wrote (shared.manifest) before anything of them is merged or kept."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from shared import manifest, naming, storage, threads
from shared.context import Context
from shared.manifest import Manifest
from shared.report import TaskOutcome
from shared.runs import RunPaths, RunRecord


class LostOutputs(Exception):
    """Outputs of succeeded tasks are missing or differ from their manifests: task id -> what."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        super().__init__(f"{len(problems)} task output(s) lost or corrupt")
        self.problems = dict(problems)


TaskListing = Mapping[str, Mapping[str, int]]  # task id -> path under its output prefix -> size


def listed_sizes(ctx: Context, out_container: str) -> TaskListing:
    """Every task's outputs' sizes, from one listing of "tasks/"."""
    return by_task(storage.blob_sizes(ctx.blobs, out_container, "tasks/"))


class OutputSizes:
    """The outputs' sizes of the tasks asked for, listed by the thousand task ids that share a
    prefix ("tasks/t012"), each thousand once: a part of a large run lists what it merges, not the
    whole container (Azurite lists about 1,000 blobs a second)."""

    def __init__(self, ctx: Context, out_container: str) -> None:
        self._ctx, self._container = ctx, out_container
        self._listed: dict[str, TaskListing] = {}

    def of(self, tasks: Iterable[str]) -> TaskListing:
        found: dict[str, Mapping[str, int]] = {}
        for prefix in sorted({naming.task_outputs(t)[:-4] for t in tasks}):  # "tasks/t012345/" -> "tasks/t012"
            if prefix not in self._listed:
                self._listed[prefix] = by_task(storage.blob_sizes(self._ctx.blobs, self._container, prefix))
            found.update(self._listed[prefix])
        return found


def by_task(sizes: Mapping[str, int]) -> TaskListing:
    """Blob name ("tasks/<task>/<path>") -> size, regrouped as task -> path -> size in one pass
    (looking each task's up by prefix in the whole listing was quadratic: minutes at 10,000 tasks)."""
    grouped: dict[str, dict[str, int]] = {}
    for name, size in sizes.items():
        task, sep, path = name[len("tasks/"):].partition("/")
        if name.startswith("tasks/") and sep:
            grouped.setdefault(task, {})[path] = size
    return grouped


def verified_manifests(ctx: Context, out_container: str, succeeded: Sequence[TaskOutcome],
                       sizes: TaskListing) -> dict[str, Manifest]:
    """Each succeeded task's manifest, after checking that every output it lists is there with
    its size (in `sizes`, one listing; one small read per task). LostOutputs names the tasks whose
    are not."""
    problems: dict[str, str] = {}
    manifests: dict[str, Manifest] = {}

    def read(task: TaskOutcome) -> tuple[str, Manifest | str]:
        data = storage.read_optional(ctx.blobs, out_container, naming.task_manifest(task.task_id))
        if data is None:
            return task.task_id, "its manifest was not uploaded"
        try:
            return task.task_id, manifest.parse(data)
        except manifest.ManifestError as e:
            return task.task_id, f"its manifest is unreadable ({e})"

    for task_id, found in threads.map_all("manifest", ctx.settings.upload_concurrency, read, succeeded):
        if isinstance(found, str):
            problems[task_id] = found
            continue
        wrong = manifest.check_listing(found, sizes.get(task_id, {}))
        if wrong:
            problems[task_id] = f"{len(wrong)} output file(s) lost or changed, e.g. {wrong[0]}"
        else:
            manifests[task_id] = found
    if problems:
        raise LostOutputs(problems)
    return manifests


def keep_other_outputs(ctx: Context, run: RunRecord, out_container: str, succeeded: Sequence[TaskOutcome],
                       manifests: Mapping[str, Manifest], merged: frozenset[str]) -> None:
    """Copy what each manifest lists (files a task's earlier, failed tries left are not listed) to
    results/<run>/tasks/<task>/, but the files in `merged`."""
    paths = RunPaths(run.run_id)
    for t in succeeded:
        prefix = naming.task_outputs(t.task_id)
        for entry in manifests[t.task_id].entries:
            if entry.path not in merged:
                storage.copy_blob(ctx.blobs, out_container, prefix + entry.path, ctx.settings.results_container,
                                  paths.task_prefix(t.task_id) + entry.path)
