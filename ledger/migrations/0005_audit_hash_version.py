"""Hash version 2: the audit hash chain over the salted leaf instead of the bare event.

Entries sequenced before this migration keep their hashes (they are append-only, and their
leaves are anchored on chain already): ``hash_version`` 1 marks them, so ``ledger_verify``
recomputes each entry by its own version. New entries get version 2 when sequenced. The
append-only guard now also keeps ``hash_version`` fixed once an entry is sequenced.
Irreversible on purpose: going back would leave version 2 entries that the old code cannot
verify. Formats: docs/audit-ledger.md.
"""

from django.db import migrations, models

MARK_EXISTING = "UPDATE ledger_auditentry SET hash_version = 1 WHERE seq IS NOT NULL"

GUARD = r"""
CREATE OR REPLACE FUNCTION ledger_auditentry_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit entry % is append-only: DELETE refused', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.id IS DISTINCT FROM OLD.id
       OR NEW.recorded IS DISTINCT FROM OLD.recorded
       OR NEW.event IS DISTINCT FROM OLD.event
       OR NEW.patient_id IS DISTINCT FROM OLD.patient_id
       OR NEW.agent IS DISTINCT FROM OLD.agent
       OR NEW.outcome IS DISTINCT FROM OLD.outcome THEN
        RAISE EXCEPTION 'audit entry % is append-only: its content cannot change', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.seq IS NOT NULL AND (
           NEW.seq IS DISTINCT FROM OLD.seq
           OR NEW.prev_hash IS DISTINCT FROM OLD.prev_hash
           OR NEW.entry_hash IS DISTINCT FROM OLD.entry_hash
           OR NEW.leaf_hash IS DISTINCT FROM OLD.leaf_hash
           OR NEW.hash_version IS DISTINCT FROM OLD.hash_version) THEN
        RAISE EXCEPTION 'audit entry % is already sequenced: seq and hashes cannot change', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.batch_id IS DISTINCT FROM OLD.batch_id
       AND OLD.batch_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM ledger_anchorbatch
                       WHERE id = OLD.batch_id AND status = 'replaced') THEN
        RAISE EXCEPTION 'audit entry % is anchored: its batch can change only when replaced', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0004_consent_tokens")]

    operations = [
        migrations.AddField(model_name="auditentry", name="hash_version",
                            field=models.SmallIntegerField(null=True)),
        # Before the new guard: the old one lets this through (it does not know the column).
        migrations.RunSQL(MARK_EXISTING),
        migrations.RunSQL(GUARD),
    ]
