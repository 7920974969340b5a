"""The environments the emulator hands on: to task processes, to the Docker CLI, and to itself.

Guarantees: a task process starts from `task_base_environment` only (``BASE_VARIABLES`` copied from the
emulator's environment, nothing else), so app settings, keys or passwords that happen to be in the
emulator's environment never reach a task; the Docker CLI additionally gets the ``DOCKER_*`` variables
it needs to find its engine; `emulator_environment` is what our tools start the emulator with.
"""
from __future__ import annotations

from collections.abc import Mapping

# What a Batch node gives every task besides its own and the AZ_BATCH_* variables.
BASE_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
DOCKER_VARIABLES = ("DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY")


def _pick(environ: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    return {name: environ[name] for name in names if name in environ}


def task_base_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables every task process starts from: only ``BASE_VARIABLES``, as set in `environ`."""
    return _pick(environ, BASE_VARIABLES)


def docker_cli_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """For the ``docker`` command itself (never for what runs in the container: that gets ``-e``)."""
    return {**task_base_environment(environ), **_pick(environ, DOCKER_VARIABLES)}


def emulator_environment(environ: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment to start ``python -m batchemu`` with: the base and Docker variables, the
    emulator's own ``BATCHEMU_*`` settings, then `extra`. Nothing else of `environ` is passed on."""
    own = {k: v for k, v in environ.items() if k.startswith("BATCHEMU_")}
    return {**docker_cli_environment(environ), **own, **(extra or {})}
