"""Merging a run's outputs in parts, each finalize invocation within FINALIZE_BUDGET_SECONDS.

A part is the next succeeded tasks (as many as the measured rate merges in a twentieth of the
budget, at most FINALIZE_PART_TASKS), taken a slice at a time, so that a part sized from a rate
measured before a slowdown stops at the budget's end instead: their outputs are checked against their
manifests, the files not merged are kept under results/<run>/tasks/, and the merged bytes are staged
as uncommitted blocks of the output blob (invisible to readers) with ids made of the part's number, so
a part replayed after a crash stages the same blocks again. After each part the progress (the next
task, the blocks each part staged, what the csv merge carries on) is written to status.json
(`merge_progress`); when the next part would not fit in the budget, finalize asks for itself again
on the finalize queue (once it let go of its claim), and so it does after the last part when the
parts took over half the budget: the commit, the report and the cleanup then have an invocation of
their own. The output is committed once, in one call, after the last part: readers never see a
partial file.

A merge done in one invocation hashes the output as it streams; one done across invocations (no
process saw all of it) reads the committed output through once for its SHA-256 and Content-MD5.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from shared import manifest, merge, naming, storage
from shared.budget import RateSizer
from shared.context import Context
from shared.report import Merged, TaskOutcome
from shared.runs import RunPaths, RunRecord
from shared.task_outputs import LostOutputs, OutputSizes, keep_other_outputs, verified_manifests

log = logging.getLogger(__name__)

FIRST_PART = 100  # tasks: a first measure of the rate
SLICE_TASKS = 100  # a part looks at the clock between slices of this many tasks
PART_SHARE = 0.05  # a part takes at most this share of the budget (an invocation overruns it by about as much)
# The commit, the report and the cleanup come after the last part, outside the parts' accounting (at
# 100,000 tasks locally, 10-20 s): when the parts took more than this share of the budget, they get an
# invocation of their own (a 100,000-task run's last finalize took 80.8 s of a budget of 60 before)
TAIL_SHARE = 0.5
MAX_PARTS = 10_000  # each part stages at least one block; a block blob holds 50,000
CONTINUES = Merged(failure="continues")  # the marker merge_in_parts returns when the next invocation goes on


@dataclass(frozen=True)
class MergeProgress:
    """How far a merge in parts got (status.json `merge_progress`)."""

    next: int = 0  # position in the run's succeeded tasks (task order) of the next part's first task
    blocks: tuple[int, ...] = ()  # blocks staged by each part so far
    size: int = 0
    csv_newline: str | None = None  # merge.Carry, once the csv header is out
    missing: tuple[str, ...] = ()  # succeeded tasks that wrote no output file
    verified: int = 0  # task outputs checked against their manifests
    invocations: int = 0  # finalize invocations that staged parts and handed the rest over

    @classmethod
    def of(cls, doc: Mapping[str, Any] | None) -> MergeProgress:
        if not doc:
            return cls()
        return cls(next=int(doc["next"]), blocks=tuple(int(n) for n in doc["blocks"]), size=int(doc["size"]),
                   csv_newline=doc.get("csv_newline"), missing=tuple(doc.get("missing") or ()),
                   verified=int(doc.get("verified") or 0), invocations=int(doc.get("invocations") or 0))

    def to_json(self) -> dict[str, Any]:
        return {"next": self.next, "blocks": list(self.blocks), "size": self.size, "csv_newline": self.csv_newline,
                "missing": list(self.missing), "verified": self.verified, "invocations": self.invocations}

    def block_ids(self) -> list[str]:
        return [storage.block_id(part, n) for part, count in enumerate(self.blocks) for n in range(count)]


@dataclass
class _Whole:
    """Digests of the output, valid only if this invocation streamed all of it."""

    sha256: Any = field(default_factory=hashlib.sha256)
    md5: Any = field(default_factory=lambda: hashlib.md5(usedforsecurity=False))

    def tee(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.sha256.update(chunk)
            self.md5.update(chunk)
            yield chunk


def merge_in_parts(ctx: Context, run: RunRecord, succeeded: Sequence[TaskOutcome], out_container: str,
                   started: float) -> Merged | None:
    """Merge (or, for merge "none", keep) the outputs of `succeeded` from where the last invocation
    stopped. Returns what was merged; CONTINUES when the rest is left to the next invocation (the
    caller asks for it once it let go of its claim); None when the run moved on meanwhile.
    LostOutputs when an output differs from its manifest (nothing is committed)."""
    progress = MergeProgress.of(run.merge_progress)
    fresh = progress.next == 0
    whole = _Whole()
    sizes = OutputSizes(ctx, out_container)
    sizer = PartSizer(ctx.settings.finalize_budget_seconds, ctx.settings.finalize_part_tasks,
                      smallest=math.ceil(len(succeeded) / MAX_PARTS))
    spent: list[float] = []
    # a part sized from a rate measured before a slowdown (one 100,000-task run: a part five times
    # slower than the ones before) would overrun the budget by the slowdown: it stops at the budget's
    # end instead, after its first slice (a budget of 0 means one whole part per invocation)
    budget = ctx.settings.finalize_budget_seconds
    deadline = started + budget if budget > 0 else None
    while progress.next < len(succeeded):
        began, before = time.monotonic(), progress.next
        part = succeeded[progress.next:progress.next + sizer.next_size()]
        progress = _merge_part(ctx, run, part, out_container, sizes, progress, whole, deadline)
        spent.append(time.monotonic() - began)
        sizer.record(progress.next - before, spent[-1])
        if progress.next < len(succeeded):
            handing_over = not _fits(ctx, started, spent)
        else:
            handing_over = budget > 0 and time.monotonic() - started > budget * TAIL_SHARE
        if handing_over:
            progress = replace(progress, invocations=progress.invocations + 1)
        if ctx.runs.note_merge_progress(run.run_id, progress.to_json()) is None:
            return None  # the run moved on meanwhile (another finalize finished it)
        if handing_over:
            log.info("merged in part run_id=%s merged=%d of %d", run.run_id, progress.next, len(succeeded))
            return CONTINUES
    return _commit(ctx, run, progress, whole if fresh else None)


@dataclass
class PartSizer(RateSizer):
    """How many tasks the next part takes (shared.budget.RateSizer: FIRST_PART, then what the rate
    measured so far merges in PART_SHARE of the budget, at most FINALIZE_PART_TASKS); with a budget
    of 0, every part FINALIZE_PART_TASKS. A fixed size overran small budgets: 2,000 tasks took 30 s
    locally against a budget of 20."""

    first: int = FIRST_PART
    share: float = PART_SHARE

    def next_size(self) -> int:
        return self.largest if self.budget <= 0 else super().next_size()


def _fits(ctx: Context, started: float, spent: list[float]) -> bool:
    budget = ctx.settings.finalize_budget_seconds
    if budget <= 0:
        return False  # one part per invocation
    return (time.monotonic() - started) + max(spent) <= budget


def _merge_part(ctx: Context, run: RunRecord, part: Sequence[TaskOutcome], out_container: str,
                sizes: OutputSizes, progress: MergeProgress, whole: _Whole, deadline: float | None) -> MergeProgress:
    """Merge `part`'s outputs a slice at a time, taking no further slice once `deadline` has passed;
    the progress after the slices taken."""
    taken = verified = 0  # tasks of the slices taken, and their manifests checked
    missing: list[str] = []

    def slices() -> Iterator[tuple[Sequence[TaskOutcome], Mapping[str, manifest.Manifest]]]:
        nonlocal taken, verified
        for start in range(0, len(part), SLICE_TASKS):
            if start and deadline is not None and time.monotonic() >= deadline:
                return  # the rest is the next part's
            piece = part[start:start + SLICE_TASKS]
            manifests = verified_manifests(ctx, out_container, piece, sizes.of(t.task_id for t in piece))
            keep_other_outputs(ctx, run, out_container, piece, manifests,
                               frozenset() if run.merge == "none" else frozenset({run.output_file}))
            taken += len(piece)
            verified += len(manifests)
            yield piece, manifests

    def sources() -> Iterator[Iterator[bytes]]:
        for piece, manifests in slices():
            entries = [(t.task_id, manifests[t.task_id].get(run.output_file)) for t in piece]
            missing.extend(task for task, entry in entries if entry is None)
            wrote = [(task, entry) for task, entry in entries if entry is not None]
            names = [naming.task_outputs(task) + run.output_file for task, _ in wrote]
            for chunks, (task, entry) in zip(storage.stream_blobs(ctx.blobs, out_container, names), wrote,
                                             strict=True):
                yield manifest.verify_stream(chunks, entry, task=task)

    if run.merge == "none":
        for _ in slices():
            pass
        return MergeProgress(next=progress.next + taken, verified=progress.verified + verified,
                             invocations=progress.invocations)
    carry = merge.Carry(progress.csv_newline.encode() if progress.csv_newline else None)
    try:
        staged = storage.stage_stream(ctx.blobs, ctx.settings.results_container, _output(run),
                                      whole.tee(merge.merge_stream(run.merge, sources(), carry)),
                                      part=len(progress.blocks))
    except manifest.OutputMismatch as e:
        raise LostOutputs({e.task: str(e)}) from None
    return MergeProgress(
        next=progress.next + taken, blocks=(*progress.blocks, len(staged.block_ids)),
        size=progress.size + staged.size, csv_newline=carry.csv_newline.decode() if carry.csv_newline else None,
        missing=(*progress.missing, *missing), verified=progress.verified + verified,
        invocations=progress.invocations)


def _output(run: RunRecord) -> str:
    return RunPaths(run.run_id).output(run.output_extension or "bin")


def _commit(ctx: Context, run: RunRecord, progress: MergeProgress, whole: _Whole | None) -> Merged:
    results = ctx.settings.results_container
    if run.merge == "none":
        return Merged(output=f"{results}/{RunPaths(run.run_id).tasks}", verified=progress.verified)
    name = _output(run)
    if whole is not None:
        md5 = base64.b64encode(whole.md5.digest()).decode()
        storage.commit_blocks(ctx.blobs, results, name, progress.block_ids(), md5)
        sha256 = whole.sha256.hexdigest()
    else:
        storage.commit_blocks(ctx.blobs, results, name, progress.block_ids())
        digests = storage.digests(ctx.blobs, results, name)
        storage.set_content_md5(ctx.blobs, results, name, digests.md5)
        sha256, md5 = digests.sha256, digests.md5
    return Merged(output=f"{results}/{name}", output_bytes=progress.size, output_sha256=sha256, output_md5=md5,
                  missing=progress.missing, verified=progress.verified)
