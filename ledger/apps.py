from django.apps import AppConfig


class LedgerConfig(AppConfig):
    """Audit outbox, consent mirror, proofs and the chain client."""

    name = "ledger"
    default_auto_field = "django.db.models.BigAutoField"
