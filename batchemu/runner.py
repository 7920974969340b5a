"""Running one command: process launch, environment, task directories, kill, optional Docker wrapping.

Guarantees: each command runs in its own process group, killed as a whole when the try is killed and
again when the command exits, so children left in the group never outlive the try; the environment is
only PATH/HOME/LANG/LC_ALL/TMPDIR (never the rest of the emulator's own), then the job's common, the task's
and the Batch variables; in Docker mode the ``docker`` CLI gets the base and ``DOCKER_*`` variables and the
container gets the others through ``-e``; every try
starts from a clean task directory with an empty ``wd/``; a signal exit code -N is reported as 128+N;
launch problems come back as Batch failureInfo, never as exceptions.
"""
from __future__ import annotations

import os
import select
import shlex
import shutil
import signal
import subprocess
import threading
import time
import uuid

from .core import EngineCore
from .model import Job, Json, Node, Run


def _launch_failed(message: str) -> Json:
    return {"category": "usererror", "code": "CommandLaunchFailed", "message": message}


def _docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=5)
        return r.returncode == 0 and bool(r.stdout.strip())
    except Exception:
        return False


class RunnerMixin(EngineCore):
    """Process execution for `Engine` tries and auxiliary tasks."""

    def _kill(self, r: Run, reason: str) -> None:
        with r.lock:
            if r.reason is None:
                r.reason = reason
            r.killed.set()
            proc = r.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if r.container_name:
            try:
                subprocess.Popen(["docker", "kill", r.container_name], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            except Exception:
                pass

    def _env(self, j: Job, node: Node, extra: list[Json] | None, task_id: str, task_dir: str,
             wd: str) -> dict[str, str]:
        env = dict(self.base_env)
        for s in j.spec.get("commonEnvironmentSettings") or []:
            env[s["name"]] = s.get("value") or ""
        for s in extra or []:
            env[s["name"]] = s.get("value") or ""
        pool = node.pool
        prep_dir = node.task_dir(j.id, "jobpreparation")
        env.update({
            "AZ_BATCH_ACCOUNT_NAME": self.account,
            "AZ_BATCH_ACCOUNT_URL": self.public_url,
            "AZ_BATCH_POOL_ID": pool.id,
            "AZ_BATCH_NODE_ID": node.id,
            "AZ_BATCH_NODE_IS_DEDICATED": "true" if node.dedicated else "false",
            "AZ_BATCH_NODE_ROOT_DIR": node.root,
            "AZ_BATCH_NODE_SHARED_DIR": node.shared_dir,
            "AZ_BATCH_NODE_STARTUP_DIR": node.startup_dir,
            "AZ_BATCH_NODE_MOUNTS_DIR": os.path.join(node.root, "fsmounts"),
            "AZ_BATCH_JOB_ID": j.id,
            "AZ_BATCH_TASK_ID": task_id,
            "AZ_BATCH_TASK_DIR": task_dir,
            "AZ_BATCH_TASK_WORKING_DIR": wd,
            "AZ_BATCH_TASK_USER": "_azbatch",
            "AZ_BATCH_TASK_USER_IDENTITY": "PoolNonAdmin",
            "AZ_BATCH_CERTIFICATES_DIR": os.path.join(task_dir, "certs"),
        })
        if j.spec.get("jobPreparationTask"):
            env["AZ_BATCH_JOB_PREP_DIR"] = prep_dir
            env["AZ_BATCH_JOB_PREP_WORKING_DIR"] = os.path.join(prep_dir, "wd")
        return env

    def _container_failure(self) -> Json:
        return {"category": "usererror", "code": "ContainerEngineUnavailable",
                "message": "The task has containerSettings but no container engine is available to the emulator "
                           "(container mode 'fail'). Start a Docker engine or run the emulator with "
                           "--container-mode host."}

    def _docker_argv(self, r: Run, argv: list[str], cwd: str, env: dict[str, str], container: Json,
                     node: Node) -> list[str]:
        """``docker run`` around a command: the node root mounted, Batch and user variables passed with -e."""
        name = f"batchemu-{uuid.uuid4().hex[:16]}"
        r.container_name = name
        docker = ["docker", "run", "--rm", "--name", name, "-v", f"{node.root}:{node.root}"]
        if (container.get("workingDirectory") or "taskWorkingDirectory").lower() != "containerimagedefault":
            docker += ["-w", cwd]
        for k, v in env.items():
            if self.base_env.get(k) != v:  # Batch and user variables (not the emulator's own environment)
                docker += ["-e", f"{k}={v}"]
        if container.get("containerRunOptions"):
            docker += shlex.split(container["containerRunOptions"])
        return docker + [container["imageName"]] + argv

    def _exec(self, r: Run, command_line: str, cwd: str, env: dict[str, str], out_path: str, err_path: str,
              deadline: float | None, container: Json | None, node: Node,
              preempt_after_start: bool = False) -> tuple[int | None, Json | None]:
        """Runs one command. Returns (exit_code | None, failure_info | None)."""
        try:
            argv = shlex.split(command_line)
        except ValueError as exc:
            return None, _launch_failed(f"Failed to parse the command line: {exc}")
        if not argv:
            return None, _launch_failed("Empty command line")
        process_env = env
        if container is not None and self.container_mode == "docker":
            process_env = self.docker_env  # user variables must not steer the docker CLI itself (DOCKER_HOST...)
            argv = self._docker_argv(r, argv, cwd, env, container, node)
        with open(out_path, "wb", buffering=0) as fo, open(err_path, "wb", buffering=0) as fe:
            with r.lock:
                if r.reason is not None:
                    return None, None
                try:
                    proc = subprocess.Popen(argv, cwd=cwd, env=process_env, stdin=subprocess.DEVNULL, stdout=fo,
                                            stderr=fe, start_new_session=True, close_fds=True)
                except FileNotFoundError:
                    return None, {"category": "usererror", "code": "CommandProgramNotFound",
                                  "message": f"The specified command program is not found: {argv[0]}"}
                except OSError as exc:
                    return None, _launch_failed(f"Failed to launch the specified command line: {exc.strerror or exc}")
                r.proc = proc
                r.started = True
            if preempt_after_start:
                self._preempt_after_start(r)
            rc = self._wait(r, proc, deadline)
        return (128 - rc if rc < 0 else rc), None

    def _wait(self, r: Run, proc: subprocess.Popen[bytes], deadline: float | None) -> int:
        """The command's exit code, seen as soon as the command exits; past the deadline the try is
        killed (wall clock). Not ``Popen.wait(timeout)``: it polls with sleeps of up to 50 ms, which
        added ~25 ms to every task with a wall clock limit (all of batchdrop's)."""
        if deadline is not None:
            self._wait_until(r, proc, deadline)
        rc = proc.wait()
        # make sure no stray children keep the group alive
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return rc

    def _wait_until(self, r: Run, proc: subprocess.Popen[bytes], deadline: float) -> None:
        """Return when the command exits or, killing it, at the deadline. A pidfd becomes readable when
        the process exits (Linux); elsewhere a timer thread kills it at the deadline."""
        try:
            fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
            timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._kill, args=(r, "wallclock"))
            timer.daemon = True
            timer.start()
            try:
                proc.wait()
            finally:
                timer.cancel()
            return
        try:
            poller = select.poll()  # not select(): descriptors past 1024 are fine
            poller.register(fd, select.POLLIN)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._kill(r, "wallclock")
                    return
                if poller.poll(min(remaining * 1000, 2**31 - 1)):
                    return
        finally:
            os.close(fd)

    def _prepare_dir(self, task_dir: str) -> str:
        """A clean task directory with an empty wd/ (each try starts from scratch)."""
        try:
            os.mkdir(task_dir)
        except FileExistsError:
            shutil.rmtree(task_dir, ignore_errors=True)
            os.makedirs(task_dir, exist_ok=True)
        except FileNotFoundError:
            os.makedirs(task_dir, exist_ok=True)
        wd = os.path.join(task_dir, "wd")
        os.mkdir(wd)
        return wd

    def _touch_std(self, task_dir: str) -> None:
        for name in ("stdout.txt", "stderr.txt"):
            path = os.path.join(task_dir, name)
            if not os.path.exists(path):
                open(path, "ab").close()
