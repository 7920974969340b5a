"""`batchdrop plan`: count a job's items, time its command on a few of them, and show what the
planner (shared.planner) predicts for each split, with its recommendation.

Items are counted where a run would read them: inline in the job file, in a local file given with
--input (as `submit --input` would upload it), or in the blob or prefix the job file names, read
through the configured target like the other commands. `--sample N` runs the job's command here on
the first N items with a task's contract (INPUT_PATH, OUTPUT_PATH, OUTPUT_DIR, CONFIG_PATH,
RESOURCES_DIR, TASK_INDEX, TASK_COUNT) in a temporary folder, without a container.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from batchdrop_cli.client import Contract
from batchdrop_cli.errors import INVALID, NOT_FOUND, RUN_FAILED, CliError
from batchdrop_cli.view import duration
from shared import jobfile, naming, paramsweep, split, zipcheck
from shared.errors import JobFileError
from shared.planner import Plan, Prediction

STDERR_TAIL_BYTES = 2000
READ_CHUNK = 4 * 1024 * 1024
# what a candidate's flags mean, in the table's last column
FLAG_MARKS = {"too-many-tasks": "over task limit", "over-timeout": "over task timeout", "short-tasks": "short tasks"}


@dataclass(frozen=True)
class Items:
    """A job's items as the plan sees them: how many, where from, and the first ones as task inputs."""

    count: int
    source: str  # where they are, for people: "inline", "blob data/x.jsonl (jsonl)", ...
    # writes the first n items as task input files, one per folder given (streaming); their item counts
    write_first: Callable[[int, Callable[[int], Path]], list[tuple[Path, int]]]
    per_blob: bool = False  # a prefix input: an item is a blob, and each blob is one task


def count_items(spec: jobfile.JobSpec, local: Path | None, contract: Callable[[], Contract],
                max_tasks: int) -> Items:
    """The job's items, counted (a blob is read once, streaming; a prefix is listed)."""
    inp = spec.input
    if isinstance(inp, jobfile.ItemsInput):
        values = inp.items

        def first_items(n: int, folder: Callable[[int], Path]) -> list[tuple[Path, int]]:
            path = folder(0) / "input.jsonl"
            path.write_bytes(next(split.split_items(values, n)))
            return [(path, min(n, len(values)))]

        source = f"sweep: {values.shape}" if isinstance(values, paramsweep.Sweep) else "inline"
        return Items(len(values), source, first_items)
    if isinstance(inp, jobfile.BlobInput):
        return _blob_items(inp, local, contract)
    names = contract().names(inp.prefix.container, inp.prefix.path, limit=max_tasks)
    if not names:
        raise CliError(f"there are no blobs under {inp.prefix} at {contract().target.endpoint}", NOT_FOUND,
                       hint="upload the inputs first, or give a local file with --input")
    more = f"; more than MAX_TASKS_PER_RUN ({max_tasks:,})" if len(names) > max_tasks else ""

    def first_blobs(n: int, folder: Callable[[int], Path]) -> list[tuple[Path, int]]:
        written = []
        for index, name in enumerate(names[:n]):
            path = folder(index) / naming.input_file_of_blob(name)
            _save(contract().chunks(inp.prefix.container, name), path)
            written.append((path, 1))
        return written

    return Items(len(names), f"under {inp.prefix}, one task each{more}", first_blobs, per_blob=True)


def _blob_items(inp: jobfile.BlobInput, local: Path | None, contract: Callable[[], Contract]) -> Items:
    where = f"local file {local}" if local is not None else f"blob {inp.blob}"
    name = f"input.{jobfile.input_extension(inp)}"

    def chunks() -> Iterator[bytes]:
        if local is None:
            return contract().chunks(inp.blob.container, inp.blob.path)
        return _file_chunks(local)

    try:
        count = sum(1 for _ in split.iter_shards(inp.format, chunks(), items_per_task=1))
    except JobFileError as e:
        raise CliError(f"{where} cannot be split as {inp.format}: {e.message}", INVALID) from None
    if count == 0:
        raise CliError(f"{where} holds no {inp.format} records, so a run would have nothing to do (intake rejects "
                       f"it)", INVALID)

    def first(n: int, folder: Callable[[int], Path]) -> list[tuple[Path, int]]:
        path = folder(0) / name
        path.write_bytes(next(split.iter_shards(inp.format, chunks(), items_per_task=n)))
        return [(path, min(n, count))]

    return Items(count, f"{where} ({inp.format})", first)


def _save(chunks: Iterable[bytes], path: Path) -> None:
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


def _file_chunks(path: Path) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            while chunk := f.read(READ_CHUNK):
                yield chunk
    except FileNotFoundError:
        raise CliError(f"input file {path} does not exist", NOT_FOUND) from None
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}", NOT_FOUND) from None


# ---------------------------------------------------------------------- the sample


@dataclass(frozen=True)
class Sample:
    """The command timed on the first `items` items, in `runs` runs (one per task input)."""

    items: int
    runs: int
    seconds: float
    no_output: int  # runs that exited 0 without writing OUTPUT_PATH

    @property
    def seconds_per_item(self) -> float:
        return self.seconds / self.items

    def as_json(self) -> dict[str, Any]:
        return {"items": self.items, "runs": self.runs, "seconds": round(self.seconds, 3),
                "seconds_per_item": round(self.seconds_per_item, 6), "no_output": self.no_output}


def run_sample(spec: jobfile.JobSpec, items: Items, n: int, contract: Callable[[], Contract],
               task_count: int) -> Sample:
    """Run the job's command on the first `n` items as a task would (one run per task input: one for
    records, one per blob for a prefix) and time it. The time includes the command's own start-up,
    spread over the items: sample more items to weigh it less."""
    output_name = jobfile.task_output_name(spec)
    timeout = spec.task_timeout_minutes * 60
    with tempfile.TemporaryDirectory(prefix="batchdrop-sample-") as tmp:
        root = Path(tmp)
        (root / "shared").mkdir()
        env = {**os.environ, "TASK_COUNT": str(task_count), "AZ_BATCH_NODE_SHARED_DIR": str(root / "shared")}
        if spec.config is not None:
            env["CONFIG_PATH"] = str(_write_config(spec.config, root / "config.json", contract))
        if spec.resources:
            env["RESOURCES_DIR"] = str(_fetch_resources(spec.resources, root / "resources", contract))

        def folder(index: int) -> Path:
            wd = root / f"t{index:06d}"
            (wd / "output").mkdir(parents=True)
            return wd

        inputs = items.write_first(n, folder)
        seconds, done, no_output = 0.0, 0, 0
        for index, (input_path, count) in enumerate(inputs):
            wd = input_path.parent
            out = wd / "output"
            task_env = {**env, "INPUT_PATH": str(input_path), "OUTPUT_DIR": str(out),
                        "OUTPUT_PATH": str(out / output_name), "TASK_INDEX": str(index),
                        "AZ_BATCH_TASK_WORKING_DIR": str(wd)}
            code, elapsed = _run(spec.command, wd, task_env, timeout)
            if code is None:
                raise CliError(f"the sample did not finish: the command ran longer than task_timeout_minutes "
                               f"({spec.task_timeout_minutes} min) on {count} item(s), and was stopped", RUN_FAILED)
            if code != 0:
                tail = (wd / "stderr.txt").read_bytes()[-STDERR_TAIL_BYTES:].decode("utf-8", "replace").rstrip()
                raise CliError(f"the sample failed: the command exited with {code} on {count} item(s) "
                               f"(TASK_INDEX {index})", RUN_FAILED,
                               hint=f"its stderr ends with:\n{tail}" if tail else "it wrote nothing on stderr")
            seconds += elapsed
            done += count
            no_output += not (out / output_name).exists()
        return Sample(done, len(inputs), seconds, no_output)


def _run(command: str, wd: Path, env: dict[str, str], timeout: float) -> tuple[int | None, float]:
    """Run `command` with /bin/sh in its own process group (stopped whole on timeout or Ctrl-C);
    (exit code or None on timeout, seconds)."""
    with open(wd / "stdout.txt", "wb") as out, open(wd / "stderr.txt", "wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=wd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if proc.poll() is None:
                _kill_group(proc)
        return code, time.monotonic() - started


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _write_config(config: jobfile.ConfigSpec, path: Path, contract: Callable[[], Contract]) -> Path:
    if isinstance(config, jobfile.BlobRef):
        _save(contract().chunks(config.container, config.path), path)
    else:
        path.write_text(json.dumps(config), encoding="utf-8")
    return path


def _fetch_resources(resources: tuple[jobfile.Resource, ...], folder: Path, contract: Callable[[], Contract]) -> Path:
    """The job's reference files in `folder`, zips with "unzip" unpacked there (as the job preparation
    task does on a node), refusing a zip with a member that would land outside."""
    folder.mkdir()
    for resource in resources:
        local = folder / resource.file_name
        _save(contract().chunks(resource.blob.container, resource.blob.path), local)
        if resource.unzip:
            with open(local, "rb") as f:
                why = zipcheck.unsafe_member(f)
            if why:
                raise CliError(f"resource {resource.blob} cannot be unpacked safely: {why}", INVALID)
            with zipfile.ZipFile(local) as z:
                z.extractall(folder)
    return folder


# ---------------------------------------------------------------------- output


def pool_line(plan: Plan) -> str:
    pool = plan.pool
    if pool.existing:
        return f"pool {pool.existing} (yours): {plan.candidates[0].max_nodes} node(s) x {pool.slots_per_node} slot(s)"
    slots = f"{pool.slots_per_node} slot{'s' if pool.slots_per_node > 1 else ''} per node"
    return f"auto pool: {pool.vm_size}, {'spot' if pool.spot else 'dedicated'}, {slots}"


def overheads_line(plan: Plan) -> str:
    o = plan.overheads
    parts = [] if plan.pool.existing else [f"node allocation {o.node_allocation_s:g} s"]
    if plan.workload.has_image:
        parts.append(f"image pull {o.image_pull_s:g} s")
    parts += [f"per task {o.task_overhead_s:g} s",
              f"monitor tick {o.monitor_tick_s:g} s (watching a last wave {o.monitor_tail_s:g} s)",
              f"queue poll {o.queue_poll_s:g} s"]
    return "assumes " + ", ".join(parts) + " (where these come from: docs/planner.md)"


def seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 60 else duration(value)


def cost_text(c: Prediction) -> str:
    return "-" if c.cost is None or c.cost.amount is None else f"{c.cost.amount:,.4f} {c.cost.currency}"


def print_table(out: Console, plan: Plan, current: int | None) -> None:
    chosen = plan.recommendation.choice
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, justify in (("", "left"), ("items/task", "right"), ("max nodes", "right"), ("tasks", "right"),
                            ("nodes", "right"), ("waves", "right"), ("task", "right"), ("wall", "right"),
                            ("node-h", "right"), ("cost", "right"), ("efficiency", "right"), ("notes", "left")):
        table.add_column(column, justify=justify, no_wrap=column != "notes")  # type: ignore[arg-type]
    for c in plan.candidates:
        mark = "->" if c is chosen else ""
        label = f"{c.items_per_task:,}" + (" (job)" if c.items_per_task == current else "")
        eff = c.efficiency
        table.add_row(mark, label, str(c.max_nodes), f"{c.tasks:,}", str(c.nodes), str(c.waves), seconds(c.task_s),
                      seconds(c.wall_s), f"{c.node_s / 3600:,.2f}", cost_text(c),
                      "-" if eff is None else f"{eff:.0%}", escape(", ".join(FLAG_MARKS[f] for f in c.flags)),
                      style="bold" if c is chosen else ("dim" if not c.feasible else None))
    out.print(table)


def as_json(plan: Plan, *, job_file: str, items: Items, seconds_per_item: float, sample: Sample | None,
            current: int | None) -> dict[str, Any]:
    rec = plan.recommendation
    pool = plan.pool
    return {
        "job_file": job_file, "items": items.count, "items_source": items.source, "per_blob": items.per_blob,
        "seconds_per_item": seconds_per_item, "sample": None if sample is None else sample.as_json(),
        "current_items_per_task": current,
        "pool": {"vm_size": pool.vm_size, "slots_per_node": pool.slots_per_node, "spot": pool.spot,
                 "existing": pool.existing},
        "overheads": plan.overheads.as_dict(), "has_image": plan.workload.has_image,
        "deadline_s": plan.deadline_s,
        "candidates": [c.as_json() for c in plan.candidates],
        "recommended": None if rec.choice is None else rec.choice.as_json(),
        "meets_deadline": rec.meets_deadline, "reason": rec.reason,
    }


def current_items_per_task(spec: jobfile.JobSpec, count: int) -> int | None:
    """The job file's own split as items per task (`tasks` T: about count / T each); None for a prefix."""
    if spec.items_per_task is not None:
        return spec.items_per_task
    if spec.tasks is not None:
        return math.ceil(count / spec.tasks)
    return None
