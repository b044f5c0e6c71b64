"""The spec's required bindings: a coded element holds a code of its value set, or is refused.

``fhir.resources`` checks a ``code`` only against the code datatype's pattern, so
``Patient.gender = "robot"`` would be stored. The value sets of every **required** binding
of R4 are expanded once, offline, from the official definitions
(``definitions/required-bindings-r4.json``, ``definitions/make_bindings.py``); this module walks
a resource guided by the R4 element types and reports each element outside its value set as
a ``code-invalid`` issue whose ``expression`` is the element's path (``Patient.gender``,
``Observation.component[1].valueQuantity.comparator``). Extensible, preferred and example
bindings are never errors; a value set the definitions cannot enumerate (MIME types,
languages, UCUM) is not checked.

A CodeableConcept or Coding of a required binding is wrong when it carries a coding of one of
the value set's systems with a code outside it. Codings of other systems (local codes,
translations) pass, unless the request asks for ``Prefer: handling=strict``
(``strict_handling``): then a concept with no coding from the value set is refused.

Pure: no database. The checked text is never rewritten (storage keeps what the client sent).
"""

from __future__ import annotations

import contextlib
import json
import re
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from django.conf import settings

from ehr.searchparams import _element_types

DEFINITIONS = Path(__file__).resolve().parent / "definitions"
MAX_ISSUES = 100
# Elements that hold a whole resource: walked as that resource's own type.
RESOURCE_TYPES = {"Resource", "DomainResource"}
BACKBONE_TYPES = {"BackboneElement", "Element"}
_strict: ContextVar[bool] = ContextVar("bindings_strict", default=False)
_LEADING_TYPE = re.compile(r"^[A-Z][A-Za-z]*(?=[.\[]|$)")


@dataclass(frozen=True)
class Binding:
    path: str  # the element's definition path (Patient.gender, Quantity.comparator)
    value_set: str
    codes: dict[str, frozenset[str]]  # system -> codes
    all_codes: frozenset[str]


@dataclass(frozen=True)
class Child:
    path: str  # definition path
    type: str  # FHIR type code, "Resource" for a contained resource
    context: str  # where the child's own elements are defined (a type, or a backbone path)
    binding: Binding | None


def enabled() -> bool:
    """FHIR_VALIDATE_BINDINGS: on in every deployment; the bench turns it off to measure it."""
    return getattr(settings, "FHIR_VALIDATE_BINDINGS", True)


@contextlib.contextmanager
def strict_handling(strict: bool):
    """Check with ``Prefer: handling=strict`` for the duration of one request."""
    token = _strict.set(strict)
    try:
        yield
    finally:
        _strict.reset(token)


def check(resource: dict, *, strict: bool | None = None) -> list[dict]:
    """The issues of every element of ``resource`` outside its required value set (empty: none)."""
    if not enabled() or not isinstance(resource, dict):
        return []
    strict = _strict.get() if strict is None else strict
    issues: list[dict] = []
    resource_type = resource.get("resourceType")
    if isinstance(resource_type, str):
        _walk(resource, resource_type, resource_type, strict, issues)
    return issues[:MAX_ISSUES]


def issues_in_entry(issues: list[dict] | None, index: int) -> list[dict] | None:
    """A resource's issues as a Bundle's: ``Observation.status`` → ``Bundle.entry[1].resource.status``."""
    if not issues:
        return issues
    prefix = f"Bundle.entry[{index}].resource"
    return [{**entry, "expression": [_LEADING_TYPE.sub(prefix, e, count=1) for e in entry["expression"]]}
            if entry.get("expression") else entry for entry in issues]


def required_bindings() -> dict[str, Binding]:
    return _bindings()


@cache
def _bindings() -> dict[str, Binding]:
    document = json.loads((DEFINITIONS / "required-bindings-r4.json").read_text(encoding="utf-8"))
    bindings = {}
    for path, item in document["bindings"].items():
        codes = {system: frozenset(found) for system, found in item["codes"].items()}
        bindings[path] = Binding(path, item["valueSet"], codes, frozenset().union(*codes.values()))
    return bindings


@cache
def _by_parent() -> dict[str, list[tuple[str, list[str]]]]:
    """The R4 element types grouped by the element (or type) that holds them."""
    grouped: dict[str, list[tuple[str, list[str]]]] = {}
    for path, types in _element_types().items():
        grouped.setdefault(path.rsplit(".", 1)[0], []).append((path, types))
    return grouped


@cache
def _children(context: str) -> dict[str, Child]:
    """JSON member name → child, for the elements defined under ``context`` that can hold a binding."""
    children: dict[str, Child] = {}
    bindings = _bindings()
    for path, types in _by_parent().get(context, ()):
        name = path.rsplit(".", 1)[1]
        binding = bindings.get(path)
        if types and types[0].startswith("@"):  # contentReference: the referenced element's children
            children[name] = Child(path, "BackboneElement", types[0][1:], binding)
            continue
        for code in types:
            key = name[:-3] + code[0].upper() + code[1:] if name.endswith("[x]") else name
            children[key] = Child(path, code, path if code in BACKBONE_TYPES else code, binding)
    children["extension"] = children["modifierExtension"] = Child(f"{context}.extension", "Extension",
                                                                  "Extension", None)
    relevant = _relevant()
    return {key: child for key, child in children.items()
            if child.binding is not None or child.type in RESOURCE_TYPES or child.context in relevant}


@cache
def _relevant() -> frozenset[str]:
    """The contexts under which some required binding can be reached (the walk skips the others:
    a Reference, a Coding or a Period never holds one)."""
    bindings = _bindings()
    edges: dict[str, set[str]] = {}
    relevant = {"Extension"} if any(p.startswith("Extension.") for p in bindings) else set()
    for parent, elements in _by_parent().items():
        for path, types in elements:
            if path in bindings:
                relevant.add(parent)
            for code in types:
                target = code[1:] if code.startswith("@") else path if code in BACKBONE_TYPES else code
                edges.setdefault(parent, set()).add(target)
        edges.setdefault(parent, set()).add("Extension")
    changed = True
    while changed:
        grown = {parent for parent, targets in edges.items() if targets & relevant}
        changed = not grown <= relevant
        relevant |= grown
    return frozenset(relevant)


def _walk(node: dict, context: str, path: str, strict: bool, issues: list[dict]) -> None:
    children = _children(context)
    for key, value in node.items():
        if key.startswith("_") or key == "resourceType":
            continue
        child = children.get(key)
        if child is None:
            continue  # no binding below it, or not an R4 element (an R4B one, a refused typo)
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            where = f"{path}.{key}[{index}]" if isinstance(value, list) else f"{path}.{key}"
            if child.binding is not None:
                _check_value(child, item, where, strict, issues)
            if isinstance(item, dict):
                if child.type in RESOURCE_TYPES:
                    inner = item.get("resourceType")
                    if isinstance(inner, str):
                        _walk(item, inner, where, strict, issues)
                else:
                    _walk(item, child.context, where, strict, issues)
        if len(issues) >= MAX_ISSUES:
            return


def _check_value(child: Child, value: object, where: str, strict: bool, issues: list[dict]) -> None:
    binding = child.binding
    if isinstance(value, str):
        if child.type in ("code", "string", "uri") and value not in binding.all_codes:
            issues.append(_issue(f"the code is not in {_described(binding)}", where))
        return
    if not isinstance(value, dict):
        return
    if child.type == "Coding":
        _check_codings(binding, [value], where, strict, issues, single=True)
    elif child.type == "CodeableConcept":
        codings = value.get("coding")
        if isinstance(codings, list):
            _check_codings(binding, codings, where, strict, issues, single=False)
        elif strict:
            issues.append(_issue(f"no coding from the required value set {binding.value_set}", where))


def _check_codings(binding: Binding, codings: list, where: str, strict: bool, issues: list[dict], *,
                   single: bool) -> None:
    in_set = False
    for index, coding in enumerate(codings):
        if not isinstance(coding, dict):
            continue
        system, code = coding.get("system"), coding.get("code")
        here = where if single else f"{where}.coding[{index}]"
        if system in binding.codes:
            if code in binding.codes[system]:
                in_set = True
            else:
                issues.append(_issue(f"the code is not one of {system} in {_described(binding)}", here))
                return
    if strict and not in_set:
        issues.append(_issue(f"no coding from the required value set {binding.value_set} "
                             "(Prefer: handling=strict)", where))


def _described(binding: Binding) -> str:
    """The value set, with its codes when they are few (never the client's value: it may be anything)."""
    if len(binding.all_codes) <= 12:
        return f"{binding.value_set} ({', '.join(sorted(binding.all_codes))})"
    return binding.value_set


def _issue(diagnostics: str, expression: str) -> dict:
    return {"severity": "error", "code": "code-invalid", "diagnostics": f"{expression}: {diagnostics}",
            "expression": [expression]}
