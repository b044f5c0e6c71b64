"""The FHIR R4 search-parameter registry, and each parameter's FHIRPath compiled into key paths.

The definitions are the official R4 (4.0.1) ones vendored in ``ehr/definitions/`` (see its
README). Indexing a resource must be fast, so instead of evaluating FHIRPath per resource
each parameter's expression is compiled once, per resource type, into ``Branch``es: the
JSON keys to follow (choice elements such as ``Observation.value`` expanded into
``valueQuantity``, ``valueString``...), the filters to apply and the FHIR type found at
the end, which decides how the value is indexed. The handful of expressions outside the
subset handled here are evaluated with ``fhirpathpy`` instead (``Plan.fallback``).
No database code: ``ehr.indexing`` does the extraction, the search code the matching.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DEFINITIONS = Path(__file__).resolve().parent / "definitions"

# R4 resource types that fhir.resources.R4B (the validator, ehr/fhir.py) does not have: the
# server cannot accept them, so they are left out of resource_types(). R4B's own new types
# (Citation, Ingredient, SubscriptionTopic...) have no R4 search parameters and are left out
# too. Kept in step with the models by tests/ehr/test_searchparams.py.
R4_TYPES_MISSING_FROM_R4B = frozenset({
    "EffectEvidenceSynthesis", "MedicinalProduct", "MedicinalProductAuthorization",
    "MedicinalProductContraindication", "MedicinalProductIndication",
    "MedicinalProductIngredient", "MedicinalProductInteraction", "MedicinalProductManufactured",
    "MedicinalProductPackaged", "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect", "RiskEvidenceSynthesis", "SubstanceNucleicAcid",
    "SubstancePolymer", "SubstanceProtein", "SubstanceReferenceInformation",
    "SubstanceSourceMaterial", "SubstanceSpecification",
})

# Which FHIR types ehr.indexing can turn into index rows, per search parameter type. A
# branch ending in any other type (a Range or SampledData for a quantity parameter, say)
# is not indexed; a parameter left with no branch is unsupported.
INDEXABLE_TYPES: dict[str, frozenset[str]] = {
    "string": frozenset({"string", "markdown", "code", "id", "uri", "url", "canonical",
                         "HumanName", "Address"}),
    "token": frozenset({"Coding", "CodeableConcept", "Identifier", "ContactPoint", "code",
                        "string", "id", "uri", "url", "canonical", "oid", "uuid", "boolean"}),
    "date": frozenset({"date", "dateTime", "instant", "Period", "Timing"}),
    "reference": frozenset({"Reference", "canonical", "uri", "url", "Resource"}),
    "quantity": frozenset({"Quantity", "SimpleQuantity", "Age", "Duration", "Distance",
                           "Count", "MoneyQuantity", "Money"}),
    "number": frozenset({"integer", "decimal", "positiveInt", "unsignedInt"}),
    "uri": frozenset({"uri", "url", "canonical", "oid", "uuid"}),
}
# Types a fhirpathpy result may have for each parameter type (the fallback loses FHIR types).
FALLBACK_TYPES = frozenset({"token", "string", "uri", "number"})
UNSUPPORTED_TYPES = frozenset({"composite", "special"})


@dataclass(frozen=True)
class SearchParam:
    code: str  # e.g. "birthdate", "_lastUpdated"
    type: str  # string | token | date | reference | quantity | number | uri | composite | special
    expression: str | None  # the official expression's parts for this resource type
    targets: tuple[str, ...]  # reference target types
    url: str


@dataclass(frozen=True, slots=True)
class Branch:
    """One way to reach values: ``ops`` applied in turn from the resource, ending at ``fhir_type``.

    ``ops`` items are ``("get", key)``, ``("eq", key, literal)`` (keep nodes whose primitive
    ``key`` equals ``literal``) or ``("index", n)``. ``target`` keeps only references to that
    resource type (``where(resolve() is Patient)``).
    """

    ops: tuple[tuple, ...]
    fhir_type: str
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """How to extract one parameter from one resource type: compiled branches or fhirpathpy."""

    param: SearchParam
    branches: tuple[Branch, ...]
    skipped: tuple[str, ...]  # "path: FhirType" of branches no index row can hold
    fallback: str | None = None  # expression for fhirpathpy when the compiler can't handle it


class UnsupportedExpression(ValueError):
    """The expression is outside the FHIRPath subset compiled here."""


# ---------------------------------------------------------------------------------------------
# Loading the vendored definitions


def _load(name: str):
    return json.loads((DEFINITIONS / name).read_text(encoding="utf-8"))


@cache
def _definitions() -> tuple[dict, ...]:
    return tuple(_load("search-parameters-r4.json"))


@cache
def _element_types() -> dict[str, list[str]]:
    return _load("element-types-r4.json")["elements"]


# Resource types new in R4B: stored, validated and searchable by the common parameters only,
# since R4 defines no search parameters for them.
R4B_ONLY_TYPES = frozenset({
    "AdministrableProductDefinition", "Citation", "ClinicalUseDefinition", "EvidenceReport",
    "Ingredient", "ManufacturedItemDefinition", "MedicinalProductDefinition", "NutritionProduct",
    "PackagedProductDefinition", "RegulatedAuthorization", "SubscriptionTopic", "SubstanceDefinition",
})


@cache
def resource_types() -> tuple[str, ...]:
    """The resource types this server stores and searches (sorted; see the module note)."""
    types = _load("element-types-r4.json")["resourceTypes"]
    kept = {t for t in types if t not in R4_TYPES_MISSING_FROM_R4B} | R4B_ONLY_TYPES
    return tuple(sorted(kept))


@cache
def r4_resource_types() -> tuple[str, ...]:
    """R4's own resource types (sorted): the list a 4.0.1 CapabilityStatement may name."""
    return tuple(sorted(_load("element-types-r4.json")["resourceTypes"]))


@cache
def _known_types() -> frozenset[str]:
    return frozenset(resource_types())


@cache
def search_params(resource_type: str) -> dict[str, SearchParam]:
    """Every official parameter of the type, including those of Resource and DomainResource."""
    if resource_type not in _known_types():
        return {}
    bases = {"Resource"} if resource_type in R4B_ONLY_TYPES else {resource_type, "Resource"}
    if resource_type not in ("Bundle", "Binary", "Parameters"):
        bases.add("DomainResource")
    params: dict[str, SearchParam] = {}
    for definition in _definitions():
        if bases.intersection(definition["base"]):
            params[definition["code"]] = _param(definition, bases)
    return dict(sorted(params.items()))


def _param(definition: dict, bases: set[str]) -> SearchParam:
    expression = definition.get("expression")
    if expression is not None:
        parts = [p for p in split_top_level(expression, "|") if _applies(p, bases)]
        expression = " | ".join(parts) or None
    return SearchParam(code=definition["code"], type=definition["type"], expression=expression,
                       targets=tuple(definition.get("target", ())), url=definition["url"])


def _applies(part: str, bases: set[str]) -> bool:
    """Whether a union part is about one of these types (a relative path applies to all)."""
    root = re.match(r"\(*([A-Za-z]+)", part)
    return root is None or not root.group(1)[0].isupper() or root.group(1) in bases


@cache
def supported_search_params(resource_type: str) -> dict[str, SearchParam]:
    """The parameters this server indexes and searches; /metadata lists exactly these."""
    return {code: plan.param for code, plan in plans(resource_type).items()}


@cache
def patient_compartment(resource_type: str) -> tuple[str, ...]:
    """Parameter codes that put a resource of this type in a Patient's compartment."""
    for entry in _load("compartment-patient-r4.json")["resource"]:
        if entry["code"] == resource_type:
            return tuple(entry.get("param", ()))
    return ()


# ---------------------------------------------------------------------------------------------
# Compiling expressions


@cache
def plans(resource_type: str) -> dict[str, Plan]:
    """Compiled extraction plans of the supported parameters of a type, by code."""
    compiled: dict[str, Plan] = {}
    for code, param in search_params(resource_type).items():
        plan = _plan(param, resource_type)
        if plan is not None:
            compiled[code] = plan
    return compiled


def _plan(param: SearchParam, resource_type: str) -> Plan | None:
    if param.type in UNSUPPORTED_TYPES or not param.expression:
        return None
    try:
        branches = compile_expression(param.expression, resource_type)
    except UnsupportedExpression:
        if param.type in FALLBACK_TYPES:
            return Plan(param, (), (), fallback=param.expression)
        return None
    kept = tuple(b for b in branches if b.fhir_type in INDEXABLE_TYPES[param.type])
    skipped = tuple(f"{_describe(b)}: {b.fhir_type}" for b in branches if b not in kept)
    return Plan(param, kept, skipped) if kept else None


def _describe(branch: Branch) -> str:
    return ".".join(str(op[1]) for op in branch.ops if op[0] == "get")


def compile_expression(expression: str, resource_type: str) -> tuple[Branch, ...]:
    """All branches of a union expression evaluated on a resource of ``resource_type``."""
    branches: list[Branch] = []
    for part in split_top_level(expression, "|"):
        for branch in _compile_path(_steps(part), resource_type):
            if branch not in branches:
                branches.append(branch)
    return tuple(branches)


def split_top_level(text: str, separator: str) -> list[str]:
    """Split on a one-character separator outside parentheses and quotes."""
    parts, depth, quoted, start = [], 0, False, 0
    for index, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
        elif not quoted and depth == 0 and char == separator:
            parts.append(text[start:index].strip())
            start = index + 1
    parts.append(text[start:].strip())
    return parts


_AS_PAREN = re.compile(r"\((.+) as (\w+)\)(.*)")
_STEP_PATTERNS = (
    ("get", re.compile(r"([A-Za-z]\w*)")),
    ("index", re.compile(r"([a-z]\w*)\[(\d+)\]")),
    ("as", re.compile(r"(?:as|ofType)\((\w+)\)")),
    ("resolve", re.compile(r"where\(resolve\(\) is (\w+)\)")),
    ("eq", re.compile(r"where\((\w+) ?= ?'([^']*)'\)")),
)


def _steps(part: str) -> list[tuple[str, ...]]:
    """``(A.b as T).c`` → ``[("get", "A"), ("get", "b"), ("as", "T"), ("get", "c")]``."""
    match = _AS_PAREN.fullmatch(part)
    if match:
        part = f"{match.group(1)}.as({match.group(2)}){match.group(3)}"
    steps = []
    for text in split_top_level(part, "."):
        steps.append(_step(text))
    return steps


def _step(text: str) -> tuple[str, ...]:
    for kind, pattern in _STEP_PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            return (kind, *match.groups())
    raise UnsupportedExpression(text)


@dataclass(frozen=True, slots=True)
class _Cursor:
    """A branch being compiled: ops so far, the FHIR type reached and where its elements live."""

    ops: tuple[tuple, ...]
    fhir_type: str
    path: str  # element-definition path prefix of the node's children
    target: str | None = None


def _compile_path(steps: list[tuple[str, ...]], resource_type: str) -> list[Branch]:
    if steps and steps[0][0] == "get" and steps[0][1][0].isupper():
        if steps[0][1] not in (resource_type, "Resource", "DomainResource"):
            return []
        root, steps = steps[0][1], steps[1:]
    else:
        root = resource_type  # a relative path, as in "name | alias"
    cursors = [_Cursor((), resource_type, root)]
    for step in steps:
        cursors = [after for cursor in cursors for after in _apply(cursor, step)]
    return [Branch(c.ops, c.fhir_type, c.target) for c in cursors]


def _apply(cursor: _Cursor, step: tuple[str, ...]) -> list[_Cursor]:
    kind = step[0]
    if kind == "get":
        return _children(cursor, step[1])
    if kind == "index":
        return [_with(c, ("index", int(step[2]))) for c in _children(cursor, step[1])]
    if kind == "as":
        return [cursor] if cursor.fhir_type.lower() == step[1].lower() else []
    if kind == "resolve":
        if cursor.fhir_type != "Reference":
            raise UnsupportedExpression(f"resolve() on {cursor.fhir_type}")
        return [_Cursor(cursor.ops, cursor.fhir_type, cursor.path, step[1])]
    field = _element(cursor.path, step[1])  # "eq": where(field = 'literal')
    if field is None or field[0] not in ("code", "string", "uri"):
        raise UnsupportedExpression(f"where({step[1]}=...) on {cursor.path}")
    return [_with(cursor, ("eq", step[1], step[2]))]


def _with(cursor: _Cursor, op: tuple) -> _Cursor:
    return _Cursor(cursor.ops + (op,), cursor.fhir_type, cursor.path, cursor.target)


def _children(cursor: _Cursor, name: str) -> list[_Cursor]:
    """The element ``name`` of the node: one cursor per type of a choice element."""
    types = _element(cursor.path, name)
    if types is not None:
        return [_Cursor(cursor.ops + (("get", name),), types[0],
                        _child_path(types[0], f"{cursor.path}.{name}"))]
    types = _element(cursor.path, name + "[x]")
    if types is None:
        raise UnsupportedExpression(f"no element {cursor.path}.{name}")
    return [_Cursor(cursor.ops + (("get", name + t[0].upper() + t[1:]),), t,
                    _child_path(t, f"{cursor.path}.{name}")) for t in types]


def _element(path: str, name: str) -> list[str] | None:
    elements = _element_types()
    found = elements.get(f"{path}.{name}")
    if found is None and "." not in path:  # inherited from DomainResource / Resource
        found = elements.get(f"DomainResource.{name}") or elements.get(f"Resource.{name}")
    if found and found[0].startswith("@"):  # contentReference: same type as another element
        return [found[0]]
    return found


def _child_path(fhir_type: str, element_path: str) -> str:
    """Where the children of a node of this type are defined."""
    if fhir_type in ("BackboneElement", "Element"):
        return element_path
    if fhir_type.startswith("@"):
        return fhir_type[1:]
    return fhir_type
