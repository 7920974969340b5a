"""Property names (and enum values) of ARM resources, checked against the ARM template schemas.

A wrong property name deploys as nothing (ARM ignores it, or the resource provider refuses it at
deployment time), and no local test sees it unless something knows the names. The facts come
from the public ARM template schemas (Azure/azure-resource-manager-schemas,
`schemas/<api-version>/<Namespace>.json`) and are vendored in `arm_facts.json` as small data:
for each resource type and api-version infra/ uses, the allowed keys of every object the Bicep
writes (recursively, only down the paths it writes), the keys the schema requires there, and the
allowed values of enum-typed keys (checked against literals and against a parameter's @allowed).

`make_arm_facts.py` builds that file from a checkout of the schemas; `check` (the test) compares
the Bicep with it. A node of the facts tree:

    {"keys": {name: node | null}, "required": [...], "open": bool, "values": node | null, "items": node | null,
     "enum": [...]}

`null` means "allowed, nothing more recorded" (a value that is an expression, or a scalar with no
enum). Keys Bicep itself adds (parent, scope, dependsOn) are not ARM properties and pass.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.infra.bicep import Resource, Template, is_expression

FACTS = Path(__file__).with_name("arm_facts.json")
BICEP_KEYWORDS = {"parent", "scope", "dependsOn"}
EXPRESSION_REF = "common/definitions.json#/definitions/expression"


def key(resource: Resource) -> str:
    return f"{resource.type}@{resource.api_version}"


def literal_string(template: Template, value: Any) -> str | None:
    """The value as a string literal, or None when it is (or may be) a name or an expression."""
    if isinstance(value, str) and "${" not in value and value not in template.names():
        return value
    return None


def string_choices(template: Template, value: Any) -> list[str] | None:
    """The strings a value can be: a literal, or every @allowed value of the parameter it names."""
    literal = literal_string(template, value)
    if literal is not None:
        return [literal]
    if isinstance(value, str) and value in template.parameters:
        for decorator in template.parameters[value].get("decorators") or []:
            if decorator.get("type") == "allowed" and all(isinstance(a, str) for a in decorator["argument"]):
                return list(decorator["argument"])
    return None


# ----------------------------------------------------------------------------- building (from schemas)


class Schemas:
    """Reads schema files (a `read(path) -> text` function) and resolves $refs within a file."""

    def __init__(self, read: Callable[[str], str]) -> None:
        self._read = read
        self._files: dict[str, dict] = {}

    def file(self, path: str) -> dict:
        if path not in self._files:
            self._files[path] = json.loads(self._read(path))
        return self._files[path]

    def alternatives(self, node: Any, path: str, seen: frozenset = frozenset()) -> list[tuple[dict, str]]:
        """The concrete schemas `node` allows (refs followed, oneOf/anyOf flattened, allOf merged);
        ARM's expression alternative left out; an unresolvable external ref becomes {} (anything)."""
        if not isinstance(node, dict):
            return []
        if "$ref" in node:
            ref = node["$ref"]
            if ref.endswith(EXPRESSION_REF):
                return []
            target_file, _, pointer = ref.partition("#")
            if target_file:
                m = re.search(r"/schemas/(.+\.json)$", target_file)
                if not m:
                    return [({}, path)]
                target_file = "schemas/" + m.group(1)
            else:
                target_file = path
            if (target_file, pointer) in seen:
                return [({}, target_file)]
            try:
                target = self.file(target_file)
            except Exception:
                return [({}, target_file)]
            for part in pointer.strip("/").split("/"):
                target = target[part]
            return self.alternatives(target, target_file, seen | {(target_file, pointer)})
        out: list[tuple[dict, str]] = []
        for combinator in ("oneOf", "anyOf"):
            for alt in node.get(combinator, []):
                out += self.alternatives(alt, path, seen)
        if "allOf" in node:
            merged: dict = {"properties": {}, "type": "object"}
            for part in node["allOf"]:
                for alt, _ in self.alternatives(part, path, seen):
                    merged["properties"].update(alt.get("properties", {}))
                    if alt.get("additionalProperties"):
                        merged["additionalProperties"] = alt["additionalProperties"]
            base = {k: v for k, v in node.items() if k not in ("allOf", "oneOf", "anyOf")}
            merged["properties"].update(base.get("properties", {}))
            out.append((merged, path))
        plain = {k: v for k, v in node.items() if k not in ("oneOf", "anyOf", "allOf")}
        # a discriminated union's base ({"type": "object", "oneOf": [...]}) adds nothing of its own
        if not out or any(k in plain for k in ("properties", "enum", "items", "additionalProperties")):
            if plain and "allOf" not in node:
                out.append((plain, path))
        return out


def _discriminate(template: Template, body: dict, alts: list[tuple[dict, str]], schemas: Schemas) -> list[tuple[dict, str]]:
    """Drop object alternatives that a literal in `body` rules out (a discriminator such as
    endpointType: 'WebHook', or a sites/config name such as 'appsettings')."""
    kept, matched = [], []
    for alt, path in alts:
        ok, matches = True, False
        for k, v in body.items():
            lit = literal_string(template, v)
            if lit is None or k not in alt.get("properties", {}):
                continue
            allowed = _enum_or_patterns(schemas.alternatives(alt["properties"][k], path))
            if allowed is not None:
                ok = ok and allowed(lit)
                matches = True
        if ok:
            kept.append((alt, path))
            matched.append(matches)
    if any(matched):  # a discriminator chose: the union's base (which lacks it) goes too
        kept = [alt for alt, m in zip(kept, matched) if m]
    return kept or alts


def _enum_or_patterns(alts: list[tuple[dict, str]]):
    """A predicate for the values the alternatives allow, or None when any string is allowed."""
    enums, patterns = [], []
    for alt, _ in alts:
        if "enum" in alt:
            enums += alt["enum"]
        elif "pattern" in alt:
            patterns.append(alt["pattern"])
        else:
            return None
    return lambda value: value in enums or any(re.search(p, f"x/{value}") for p in patterns)


def build(template: Template, value: Any, alts: list[tuple[dict, str]], schemas: Schemas) -> dict | None:
    """The facts node for `value` (a Bicep value) under schema alternatives `alts`."""
    if is_expression(value):
        op = value.get("operator", {})
        if op.get("type") == "conditional":  # both branches are checked against the same schema
            a = build(template, op["operands"]["true_value"], alts, schemas)
            b = build(template, op["operands"]["false_value"], alts, schemas)
            return merge(a, b)
        return None
    objects = [(a, p) for a, p in alts if a.get("type") == "object" or "properties" in a or "additionalProperties" in a]
    if isinstance(value, dict):
        objects = _discriminate(template, value, objects, schemas)
        node: dict = {"keys": {}}
        open_values: list[tuple[dict, str]] = []
        required = [set(alt.get("required", [])) for alt, _ in objects]
        if required and set.intersection(*required):
            node["required"] = sorted(set.intersection(*required))
        for alt, path in objects or [({}, "")]:
            for k in alt.get("properties", {}):
                node["keys"].setdefault(k, None)
            extra = alt.get("additionalProperties")
            if extra or (not alt.get("properties") and extra is None):
                node["open"] = True
                if isinstance(extra, dict):
                    open_values += schemas.alternatives(extra, path)
        for k, v in value.items():
            name = k.strip("'")
            child_alts = [c for alt, path in objects for c in schemas.alternatives(alt.get("properties", {}).get(name), path)]
            if name in node["keys"]:
                node["keys"][name] = merge(node["keys"][name], build(template, v, child_alts, schemas))
            elif node.get("open") and open_values:
                node["values"] = merge(node.get("values"), build(template, v, open_values, schemas))
        return node
    if isinstance(value, list):
        items = [i for alt, path in alts for i in schemas.alternatives(alt.get("items"), path)]
        node = {"items": None}
        for element in value:
            node["items"] = merge(node["items"], build(template, element, items, schemas))
        return node
    if string_choices(template, value) is not None:
        enums = [alt["enum"] for alt, _ in alts if "enum" in alt]
        if enums and len(enums) == len([a for a, _ in alts if a.get("type", "string") == "string" or "enum" in a]):
            return {"enum": sorted({e for group in enums for e in group})}
    return None


def merge(a: dict | None, b: dict | None) -> dict | None:
    if a is None:
        return b
    if b is None:
        return a
    out = dict(a)
    if "keys" in b:
        keys = dict(a.get("keys", {}))
        for k, v in b["keys"].items():
            keys[k] = merge(keys.get(k), v)
        out["keys"] = keys
    for k in ("values", "items"):
        if k in b:
            out[k] = merge(a.get(k), b[k])
    if b.get("open"):
        out["open"] = True
    if "required" in a or "required" in b:
        out["required"] = sorted(set(a.get("required", [])) & set(b.get("required", []))) \
            if "required" in a and "required" in b else a.get("required", b.get("required"))
    if "enum" in b:
        out["enum"] = sorted(set(a.get("enum", [])) | set(b["enum"]))
    return out


# ----------------------------------------------------------------------------- checking (the test)


def load_facts() -> dict:
    return json.loads(FACTS.read_text())


def check(template: Template, resource: Resource, facts: dict) -> list[str]:
    """Problems of one resource: keys the schema does not have, literals outside an enum, objects
    the facts do not cover (regenerate them)."""
    entry = facts["resources"].get(key(resource))
    if entry is None:
        return [f"{resource.label}: no ARM schema facts for {key(resource)}: run "
                f"`python -m tests.infra.make_arm_facts <schemas checkout>`"]
    if resource.existing:  # a reference by name: nothing of it is deployed
        return []
    body = {k: v for k, v in resource.body.items() if k not in BICEP_KEYWORDS}
    problems: list[str] = []
    _check(template, body, entry["tree"], resource.label, "", problems)
    return problems


def _check(template: Template, value: Any, node: dict | None, label: str, path: str, problems: list[str]) -> None:
    if is_expression(value):
        op = value.get("operator", {})
        if op.get("type") == "conditional":
            _check(template, op["operands"]["true_value"], node, label, path, problems)
            _check(template, op["operands"]["false_value"], node, label, path, problems)
        return
    if isinstance(value, dict):
        if node is None or "keys" not in node:
            problems.append(f"{label}: {path or 'resource'} is an object the facts do not cover; regenerate arm_facts.json")
            return
        given = {k.strip("'") for k in value}
        # type and apiVersion come from the resource declaration itself
        missing = set(node.get("required", [])) - given - ({"type", "apiVersion"} if not path else set())
        if missing:
            problems.append(f"{label}: {path or 'resource'} lacks required propert{'y' if len(missing) == 1 else 'ies'} "
                            f"{', '.join(sorted(missing))}")
        for k, v in value.items():
            name = k.strip("'")
            where = f"{path}.{name}" if path else name
            if name in node["keys"]:
                _check(template, v, node["keys"][name], label, where, problems)
            elif node.get("open"):
                _check(template, v, node.get("values"), label, where, problems) if node.get("values") else None
            else:
                near = [k2 for k2 in node["keys"] if k2.lower() == name.lower()]
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                problems.append(f"{label}: {where} is not a property of the ARM schema{hint}; allowed here: "
                                f"{', '.join(sorted(node['keys']))}")
        return
    if isinstance(value, list):
        if node is None or "items" not in node:
            if any(isinstance(v, (dict, list)) for v in value):
                problems.append(f"{label}: {path} is an array the facts do not cover; regenerate arm_facts.json")
            return
        for i, element in enumerate(value):
            _check(template, element, node["items"], label, f"{path}[{i}]", problems)
        return
    for choice in string_choices(template, value) or []:
        if node is not None and "enum" in node and choice not in node["enum"]:
            problems.append(f"{label}: {path} = {choice!r} is not one of {node['enum']}")
