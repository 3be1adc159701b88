-- The figures each liquidation stage saw before it sold, and the rule they must
-- obey: a stage only ever sells from an account the ledger shows below
-- maintenance at that moment.
ALTER TABLE liquidation_stages
    ADD COLUMN equity_before numeric CHECK (equity_before > '-Infinity' AND equity_before < 'Infinity'),
    ADD COLUMN maintenance_before numeric CHECK (maintenance_before >= 0 AND maintenance_before < 'Infinity'),
    ADD CONSTRAINT liquidation_stages_only_in_breach
        CHECK (equity_before IS NULL OR equity_before < maintenance_before);
