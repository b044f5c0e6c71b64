"""Append-only audit entries, enforced by PostgreSQL rather than by code.

``ledger_auditentry``: DELETE is refused; UPDATE is refused unless it only
(a) sequences an unsequenced entry (sets seq, prev_hash, entry_hash, leaf_hash while
OLD.seq IS NULL), and/or (b) sets ``batch_id`` while it is NULL or while the current batch
has status 'replaced'. ``ledger_auditsalt``: DELETE allowed (erasure), UPDATE refused.
Errors use SQLSTATE 23001 (restrict_violation), which Django raises as IntegrityError.
TRUNCATE is not guarded: it needs the table owner, and test databases are flushed with it.
"""

from django.db import migrations

FORWARD = r"""
CREATE FUNCTION ledger_auditentry_guard() RETURNS trigger LANGUAGE plpgsql AS $$
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
           OR NEW.leaf_hash IS DISTINCT FROM OLD.leaf_hash) THEN
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

CREATE TRIGGER ledger_auditentry_append_only
    BEFORE UPDATE OR DELETE ON ledger_auditentry
    FOR EACH ROW EXECUTE FUNCTION ledger_auditentry_guard();

CREATE FUNCTION ledger_auditsalt_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit salt of entry % cannot be updated (only erased)', OLD.entry_id
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER ledger_auditsalt_no_update
    BEFORE UPDATE ON ledger_auditsalt
    FOR EACH ROW EXECUTE FUNCTION ledger_auditsalt_guard();
"""

BACKWARD = r"""
DROP TRIGGER IF EXISTS ledger_auditsalt_no_update ON ledger_auditsalt;
DROP FUNCTION IF EXISTS ledger_auditsalt_guard();
DROP TRIGGER IF EXISTS ledger_auditentry_append_only ON ledger_auditentry;
DROP FUNCTION IF EXISTS ledger_auditentry_guard();
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
