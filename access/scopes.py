"""SMART App Launch scopes (v1 and v2), parsed into what they allow. Pure: no database.

A resource scope is ``<context>/<type>.<actions>``: context ``patient``, ``user`` or
``system``; type a FHIR resource type or ``*``; actions either SMART v2 letters in the order
``cruds`` (``rs``, ``cruds``) or SMART v1 words (``read`` = ``rs``, ``write`` = ``cud``,
``*`` = all). Other scopes (``openid``, ``fhirUser``, ``launch/patient``, ...) are kept
verbatim in ``ScopeSet.other``. Granular v2 scopes (``?category=...``) are refused rather
than widened to the whole type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CONTEXTS = ("patient", "user", "system")
ACTION_ORDER = "cruds"
V1_ACTIONS = {"read": frozenset("rs"), "write": frozenset("cud"), "*": frozenset(ACTION_ORDER)}
NON_RESOURCE_SCOPES = frozenset(
    {"openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
     "offline_access", "online_access"}
)
# What the server advertises (scopes_supported); any narrower valid scope is accepted too.
SUPPORTED_SCOPES = sorted(NON_RESOURCE_SCOPES) + [
    f"{context}/*.{actions}" for context in CONTEXTS for actions in ("cruds", "rs")
]
_RESOURCE = re.compile(r"^(?P<context>[a-z]+)/(?P<type>[A-Z][A-Za-z]{0,63}|\*)\.(?P<actions>[^?\s]+)$")


@dataclass(frozen=True)
class Scope:
    context: str  # "patient" | "user" | "system"
    resource_type: str  # a resource type or "*"
    actions: frozenset[str]  # subset of {"c", "r", "u", "d", "s"}

    def covers(self, resource_type: str, action: str) -> bool:
        return self.resource_type in ("*", resource_type) and action in self.actions

    def within(self, other: Scope) -> bool:
        """True when everything this scope grants is also granted by ``other``."""
        return (self.context == other.context
                and other.resource_type in ("*", self.resource_type)
                and self.actions <= other.actions)

    def __str__(self) -> str:
        letters = "".join(a for a in ACTION_ORDER if a in self.actions)
        return f"{self.context}/{self.resource_type}.{letters}"


@dataclass(frozen=True)
class ScopeSet:
    scopes: tuple[Scope, ...]
    raw: str
    other: frozenset[str] = field(default_factory=frozenset)

    def allows(self, resource_type: str, action: str) -> bool:
        return any(scope.covers(resource_type, action) for scope in self.scopes)

    def contexts_for(self, resource_type: str, action: str) -> set[str]:
        return {scope.context for scope in self.scopes if scope.covers(resource_type, action)}

    def within(self, allowed: ScopeSet) -> bool:
        """True when every scope here is granted by ``allowed`` (a client's permitted set)."""
        return (self.other <= allowed.other
                and all(any(mine.within(theirs) for theirs in allowed.scopes) for mine in self.scopes))


def parse_scopes(text: str) -> ScopeSet:
    """Parse a space-separated scope string; ValueError names the first malformed resource scope."""
    resource: list[Scope] = []
    other: set[str] = set()
    for word in (text or "").split():
        if _is_resource_scope(word):
            resource.append(parse_scope(word))
        else:
            other.add(word)
    return ScopeSet(scopes=tuple(resource), raw=" ".join((text or "").split()), other=frozenset(other))


def parse_scope(word: str) -> Scope:
    if "?" in word:
        raise ValueError(f"Scope '{word}': granular scopes (with '?') are not supported")
    match = _RESOURCE.match(word)
    if not match:
        raise ValueError(f"Scope '{word}' is not <patient|user|system>/<Type|*>.<actions>")
    if match["context"] not in CONTEXTS:
        raise ValueError(f"Scope '{word}': context must be one of {', '.join(CONTEXTS)}")
    return Scope(match["context"], match["type"], _actions(word, match["actions"]))


def is_valid_scope(word: str) -> bool:
    """Whether one scope is a known non-resource scope or a well-formed resource scope."""
    if word in NON_RESOURCE_SCOPES:
        return True
    try:
        parse_scope(word)
    except ValueError:
        return False
    return True


def _is_resource_scope(word: str) -> bool:
    return word not in NON_RESOURCE_SCOPES and "/" in word and word.split("/", 1)[0] in CONTEXTS


def _actions(word: str, text: str) -> frozenset[str]:
    if text in V1_ACTIONS:
        return V1_ACTIONS[text]
    if not re.fullmatch(r"c?r?u?d?s?", text) or not text:
        raise ValueError(f"Scope '{word}': actions must be 'read', 'write', '*' or letters of "
                         f"'cruds' in that order, not '{text}'")
    return frozenset(text)
