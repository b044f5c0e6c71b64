"""The one error of the verifier: its message is the reason shown to the user."""


class ProofInvalid(Exception):
    """Why a proof does not hold (the message is the reason shown to the user)."""
