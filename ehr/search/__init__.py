"""FHIR R4 search: parse a query, run it on the index tables, render the searchset Bundle.

The API calls ``parse_search`` then ``run_search`` then ``searchset_bundle``; every
problem with the client's query is a ``SearchError`` (a 400 OperationOutcome).
"""

from .bundle import searchset_bundle
from .engine import SearchResult, run_search
from .errors import SearchError
from .query import DEFAULT_COUNT, MAX_COUNT, SearchQuery, parse_search

__all__ = [
    "DEFAULT_COUNT",
    "MAX_COUNT",
    "SearchError",
    "SearchQuery",
    "SearchResult",
    "parse_search",
    "run_search",
    "searchset_bundle",
]
