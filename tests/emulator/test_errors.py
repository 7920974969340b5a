"""Error codes have a fixed HTTP status, from one table (never guessed from the code's name)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import batchemu
from batchemu.errors import ERRORS, BatchError, err

SOURCES = sorted(Path(batchemu.__file__).parent.glob("*.py"))


def _codes_used() -> set[str]:
    """Every literal error code passed to err(...), BatchError(...) or code=... in batchemu."""
    used = set()
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            args = [node.args[0]] if name in ("err", "BatchError") and node.args else []
            args += [kw.value for kw in node.keywords if kw.arg == "code"]
            for a in args:
                if isinstance(a, ast.IfExp):
                    args += [a.body, a.orelse]
                elif isinstance(a, ast.Constant) and isinstance(a.value, str):
                    used.add(a.value)
    return used


def test_every_code_the_emulator_raises_is_in_the_table():
    used = _codes_used()
    assert {"PoolNotFound", "ConditionNotMet", "JobBeingDeleted", "InvalidUri"} <= used  # the scan finds them
    assert used - set(ERRORS) == set()


def test_the_table_fixes_statuses_the_old_name_guess_got_from_prefixes():
    assert {code: ERRORS[code].status for code in (
        "JobPreparationTaskNotSpecified", "TaskDependenciesNotSpecifiedOnJob", "JobNotActive", "InvalidUri",
        "NotSupportedByEmulator", "InvalidAutoScalingSettings", "DirectoryNotEmpty", "AuthenticationFailed",
    )} == {"JobPreparationTaskNotSpecified": 409, "TaskDependenciesNotSpecifiedOnJob": 400, "JobNotActive": 409,
           "InvalidUri": 404, "NotSupportedByEmulator": 400, "InvalidAutoScalingSettings": 409,
           "DirectoryNotEmpty": 409, "AuthenticationFailed": 403}


def test_an_error_takes_status_and_default_message_from_the_table():
    e = err("TaskSucceeded")
    assert (e.status, e.code, e.message) == (409, "TaskSucceeded", ERRORS["TaskSucceeded"].message)
    e = BatchError("FileNotFound", "The specified path is a directory.", {"Path": "wd"})
    assert e.status == 404 and e.body("rid")["values"] == [{"key": "Path", "value": "wd"}]
    with pytest.raises(KeyError):
        err("SomethingNobodyDefined")
