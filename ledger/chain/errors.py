"""Errors of the chain port: callers never see a web3 or requests exception."""


class LedgerError(Exception):
    """Base of every chain-side failure."""


class LedgerUnavailable(LedgerError):
    """The node cannot be reached or did not answer in time: retry later, lose nothing."""


class ContractRejected(LedgerError):
    """The transaction was mined and reverted, or would revert: retrying will not help."""


class ArtifactMissing(LedgerError):
    """A compiled contract is missing: ``make`` compiles them into contracts/build/."""
