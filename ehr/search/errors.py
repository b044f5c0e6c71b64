"""The one error search raises for client input; the API turns it into a 400 OperationOutcome."""


class SearchError(Exception):
    """A search the server refuses; ``code`` is the FHIR issue type (invalid, not-supported)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
