-- Two people for a large waive: a waive of a shortfall above the policy's
-- amount took effect only when a second operator approved it. Both names are
-- on the waiver's row: "operator" asked, "approved_by" approved. NULL for a
-- waive one operator could decide alone (and for every waiver before this).
ALTER TABLE waivers
    ADD COLUMN requested_at    timestamptz,
    ADD COLUMN approved_by     text,
    ADD COLUMN approval_reason text,
    ADD COLUMN approved_at     timestamptz;

-- An approval is whole (who, why, when) and never the requester's own: the
-- case refuses that first (case and composition folded); this holds the
-- ledger to it whatever writes here.
ALTER TABLE waivers ADD CONSTRAINT waivers_approval_whole CHECK (
    (approved_by IS NULL AND approval_reason IS NULL AND approved_at IS NULL AND requested_at IS NULL)
    OR (approved_by IS NOT NULL AND approval_reason IS NOT NULL AND approved_at IS NOT NULL
        AND requested_at IS NOT NULL)
);
ALTER TABLE waivers ADD CONSTRAINT waivers_second_operator CHECK (approved_by <> operator);
