"""Output shapes of the ledger API, for the OpenAPI schema (the views build plain dicts)."""

from rest_framework import serializers

from access.drf import ErrorSerializer


class NotAnchoredSerializer(ErrorSerializer):
    status = serializers.DictField(help_text="what is known: id, seq, anchor (unsequenced, pending, sent)")


class ProofEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    seq = serializers.IntegerField()
    event = serializers.CharField(required=False, help_text="canonical AuditEvent JSON, only with the salt")
    leaf_hash = serializers.CharField()
    prev_hash = serializers.CharField(required=False, help_text="hash version 2 only, with entry_hash")
    entry_hash = serializers.CharField(
        required=False, help_text="SHA-256(0x02 || prev_hash || seq || leaf_hash); hash version 2 only")


class ProofMerkleSerializer(serializers.Serializer):
    leaf_index = serializers.IntegerField()
    tree_size = serializers.IntegerField()
    path = serializers.ListField(child=serializers.CharField())
    root = serializers.CharField()


class ProofAnchorSerializer(serializers.Serializer):
    first_seq = serializers.IntegerField()
    last_seq = serializers.IntegerField()
    chain_id = serializers.IntegerField()
    contract = serializers.CharField()
    member = serializers.CharField()
    transaction = serializers.CharField()
    block_number = serializers.IntegerField()
    block_hash = serializers.CharField()


class AuditProofSerializer(serializers.Serializer):
    """The proof document (docs/audit-ledger.md); hashes are 0x-prefixed hex."""

    version = serializers.IntegerField()
    entry = ProofEntrySerializer()
    salt = serializers.CharField(required=False, help_text="hex; absent once erased")
    merkle = ProofMerkleSerializer()
    anchor = ProofAnchorSerializer()


class ConsentProofSerializer(serializers.Serializer):
    kind = serializers.CharField(help_text="carrack-consent-proof")
    version = serializers.IntegerField()
    token = serializers.DictField(help_text="id, chain_id, contract, issuer, valid_from, valid_until, serial")
    terms = serializers.DictField(help_text="pseudonym, grantee, grantee_hash, purpose, consent_hash, terms")
    consent = serializers.DictField(help_text="reference (Consent/id/_history/version) and hash")
    grant = serializers.DictField(help_text="transaction and block_number (null until confirmed)")
    revoke = serializers.DictField(allow_null=True)
    status = serializers.CharField(help_text="the mirror's status: pending, active or revoked")
    on_chain = serializers.DictField(help_text="the token's state read from the chain now")
