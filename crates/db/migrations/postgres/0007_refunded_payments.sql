-- A charge can be refunded at the provider (its dashboard, or a refund before the order was
-- placed): attempts and the test provider's ledger can say so.
ALTER TABLE payment_attempts DROP CONSTRAINT payment_attempts_status_check;
ALTER TABLE payment_attempts ADD CONSTRAINT payment_attempts_status_check
    CHECK (status IN ('pending', 'unknown', 'captured', 'declined', 'voided', 'refunded'));
ALTER TABLE test_provider_charges DROP CONSTRAINT test_provider_charges_status_check;
ALTER TABLE test_provider_charges ADD CONSTRAINT test_provider_charges_status_check
    CHECK (status IN ('captured', 'declined', 'voided', 'refunded'));
