"""A small reading of the Bicep in infra/, over pycep-parser's JSON (no Bicep compiler runs here).

pycep gives each file's parameters, variables, resources, modules and outputs, with expressions
as nested {"function": ...} / {"operator": ...} objects. It does not tell a string literal from an
identifier ('intake' and intake both come out as "intake"), and it binds `a == b ? c : d` as
`a == (b ? c : d)`: so infra/ parenthesises every comparison, and `evaluate` looks a bare string
up as a name first and takes it as a literal only when no parameter, variable or loop item has
that name.

`evaluate` resolves what the tests need: literals, parameters (their given value or default),
variables, string(...), '${...}' interpolation of those, and conditionals. Anything else (resource
properties, uniqueString, ...) becomes an `Opaque` standing for "some value only Azure knows".
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@functools.cache
def parse(path: Path) -> dict:
    """pycep's JSON for one file; raises on a file pycep cannot parse."""
    return BicepParser().parse(file_path=path)


@dataclass(frozen=True)
class Opaque:
    """A value only known at deployment (a resource property, a function we do not evaluate)."""

    text: str

    def __str__(self) -> str:
        return f"<{self.text}>"


def is_expression(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("function", "operator")


@dataclass
class Resource:
    symbol: str
    type: str
    api_version: str
    existing: bool
    body: dict  # name, parent, scope, properties, ...
    condition: Any = None
    loop: dict | None = None
    file: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.file.relative_to(ROOT) if self.file else '?'}: {self.symbol} ({self.type}@{self.api_version})"


@dataclass
class Template:
    path: Path
    json: dict
    values: dict[str, Any] = field(default_factory=dict)  # parameter values given by the caller

    @classmethod
    def load(cls, path: Path, values: dict[str, Any] | None = None) -> Template:
        return cls(path, parse(path), dict(values or {}))

    @property
    def parameters(self) -> dict:
        return self.json.get("parameters") or {}

    @property
    def variables(self) -> dict:
        return self.json.get("variables") or {}

    @property
    def outputs(self) -> dict:
        return self.json.get("outputs") or {}

    @property
    def modules(self) -> dict:
        return self.json.get("modules") or {}

    def resources(self) -> list[Resource]:
        out = []
        for symbol, r in (self.json.get("resources") or {}).items():
            config, condition, loop = r["config"], None, None
            if "loop_type" in config:
                loop, condition, config = config["loop_type"], config.get("condition"), config["config"]
            elif "condition" in config and "config" in config:
                condition, config = config["condition"], config["config"]
            out.append(Resource(symbol, r["type"], r["api_version"], bool(r.get("existing")), config,
                                condition, loop, self.path))
        return out

    def module_body(self, symbol: str) -> dict:
        config = self.modules[symbol]["config"]
        return config["config"] if "config" in config and "params" not in config else config

    def module_template(self, symbol: str) -> Template:
        """The module's template, with the parameter values this template passes it."""
        path = (self.path.parent / self.modules[symbol]["detail"]["path"]).resolve()
        params = self.module_body(symbol).get("params") or {}
        return Template.load(path, {k: self.evaluate(v) for k, v in params.items()})

    # ---------------------------------------------------------------- evaluation

    def names(self) -> set[str]:
        return set(self.parameters) | set(self.variables) | set(self.json.get("resources") or {}) | set(self.modules)

    def evaluate(self, value: Any, items: dict[str, Any] | None = None) -> Any:
        items = items or {}
        if isinstance(value, bool) or isinstance(value, (int, float)) or value is None:
            return value
        if isinstance(value, str):
            return self._name_or_literal(value, items)
        if isinstance(value, list):
            return [self.evaluate(v, items) for v in value]
        if isinstance(value, dict) and not is_expression(value):
            return {k.strip("'"): self.evaluate(v, items) for k, v in value.items()}
        return self._expression(value, items)

    def _name_or_literal(self, text: str, items: dict[str, Any]) -> Any:
        if text in items:
            return items[text]
        if text in self.parameters:
            return self.parameter(text)
        if text in self.variables:
            return self.evaluate(self.variables[text]["value"], items)
        if text in (self.json.get("resources") or {}) or text in self.modules:
            return Opaque(text)
        if "${" in text:
            return self._interpolate(text, items)
        return text

    def required_parameters(self) -> set[str]:
        """Parameters without a default (pycep gives those a default of None)."""
        return {name for name, spec in self.parameters.items() if spec.get("default") is None}

    def parameter(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        if name in self.required_parameters():
            return Opaque(f"param {name}")
        return self.evaluate(self.parameters[name]["default"])

    def _interpolate(self, text: str, items: dict[str, Any]) -> Any:
        opaque = False

        def one(match: re.Match) -> str:
            nonlocal opaque
            inner = match.group(1).strip()
            value = self._name_or_literal(inner, items) if re.fullmatch(r"\w+", inner) else Opaque(inner)
            if isinstance(value, Opaque):
                opaque = True
            return str(value)

        out = re.sub(r"\$\{([^}]*)\}", one, text)
        return Opaque(out) if opaque else out

    def _expression(self, value: dict, items: dict[str, Any]) -> Any:
        if "function" in value:
            fn = value["function"]
            if fn.get("type") == "string":
                inner = self.evaluate(next(iter(fn["parameters"].values())), items)
                return inner if isinstance(inner, Opaque) else _arm_string(inner)
            return Opaque(f"{fn.get('type')}(...)")
        op = value["operator"]
        if op.get("type") == "property_accessor":
            return Opaque(".".join(_dotted(value)))
        if op.get("type") == "conditional":
            o = op["operands"]
            condition = self.evaluate(o["condition"], items)
            if isinstance(condition, bool):
                return self.evaluate(o["true_value" if condition else "false_value"], items)
            return Opaque("conditional")
        if op.get("type") == "equals":
            a, b = (self.evaluate(x, items) for x in op["operands"].values())
            return Opaque("==") if isinstance(a, Opaque) or isinstance(b, Opaque) else a == b
        return Opaque(str(op.get("type")))


def _dotted(value: Any) -> list[str]:
    """a.b.c of nested property accessors."""
    if isinstance(value, dict) and "operator" in value and value["operator"].get("type") == "property_accessor":
        o = value["operator"]["operands"]
        return _dotted(o["operand_1"]) + _dotted(o["operand_2"])
    return [value if isinstance(value, str) else "?"]


def _arm_string(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def all_templates() -> list[Template]:
    return [Template.load(p) for p in bicep_files()]


def all_resources() -> list[Resource]:
    return [r for t in all_templates() for r in t.resources()]
