"""Build tests/infra/arm_facts.json from the ARM template schemas (run by hand, not by the tests).

    python -m tests.infra.make_arm_facts <schemas>

<schemas> is a checkout of Azure/azure-resource-manager-schemas, or its git directory (read with
`git show HEAD:<path>`). For each resource type and api-version that infra/ uses, the facts record
the schema file it came from, the GA api-versions the schemas know for the type, and the tree of
allowed keys down the paths the Bicep writes (see armschema). Rerun it after changing a resource's
api-version or writing a new nested object; the test says when.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.infra import armschema, bicep

SCOPES = ("resourceDefinitions", "subscription_resourceDefinitions", "extension_resourceDefinitions",
          "tenant_resourceDefinitions", "managementGroup_resourceDefinitions", "unknown_resourceDefinitions")


def reader(where: Path):
    if (where / "schemas").is_dir():
        return (lambda p: (where / p).read_text()), None
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, check=True).stdout
    return (lambda p: git("show", f"HEAD:{p}")), git


def main(argv: list[str]) -> int:
    where = Path(argv[0])
    read, git = reader(where)
    listing = (git("ls-tree", "-r", "--name-only", "HEAD", "schemas") if git else
               "\n".join(str(p.relative_to(where)) for p in (where / "schemas").rglob("*.json")))
    commit = git("rev-parse", "HEAD").strip() if git else None
    schemas = armschema.Schemas(read)
    resources = [(t, r) for t in bicep.all_templates() for r in t.resources()]
    wanted = sorted({armschema.key(r) for _, r in resources})
    namespaces = {k.split("/")[0].lower() for k in wanted}
    # every schema file of those namespaces: where each type is defined, at which versions
    defined: dict[str, dict[str, tuple[str, str, str]]] = {}
    for path in listing.split():
        if not path.endswith(".json") or not path.split("/")[-1].lower().startswith(tuple(namespaces)):
            continue
        try:
            doc = schemas.file(path)
        except (json.JSONDecodeError, subprocess.CalledProcessError):
            continue
        version = path.split("/")[1]
        for scope in SCOPES:
            for name, definition in (doc.get(scope) or {}).items():
                for alt in [definition, *definition.get("oneOf", [])]:
                    enum = alt.get("properties", {}).get("type", {}).get("enum") or []
                    for rtype in enum:
                        defined.setdefault(rtype.lower(), {}).setdefault(version, (path, scope, name))
    facts = {"source": {"repository": "Azure/azure-resource-manager-schemas", "commit": commit,
                        "generated_by": "python -m tests.infra.make_arm_facts"}, "resources": {}}
    for wanted_key in wanted:
        rtype, version = wanted_key.split("@")
        versions = defined.get(rtype.lower(), {})
        if version not in versions:
            print(f"{wanted_key}: not in the schemas", file=sys.stderr)
            return 1
        path, scope, name = versions[version]
        definition = schemas.file(path)[scope][name]
        tree = None
        for template, resource in resources:
            if armschema.key(resource) != wanted_key:
                continue
            body = {k: v for k, v in resource.body.items() if k not in armschema.BICEP_KEYWORDS}
            if resource.existing:
                body = {"name": body.get("name")}
            tree = armschema.merge(tree, armschema.build(template, body, schemas.alternatives(definition, path), schemas))
        facts["resources"][wanted_key] = {
            "schema": f"{path}#/{scope}/{name}",
            "ga_versions": sorted(v for v in versions if "preview" not in v),
            "tree": tree,
        }
    armschema.FACTS.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    print(f"wrote {armschema.FACTS} ({len(wanted)} resource types)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
