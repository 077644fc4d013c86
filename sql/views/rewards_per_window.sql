-- One row per group, reward kind and name, and window (period or cycle number): how many
-- rewards stand and how many were revoked. Read with the run files to reconcile pay-outs.
CREATE OR REPLACE VIEW rewards_per_window AS
SELECT
    group_id,
    group_name,
    kind,
    name,                                   -- target, group (UNIFIED) or streak level
    period_index,                           -- STREAK levels: the window the level was reached in
    ref_code,
    min(window_start) AS window_start,      -- cycles differ per customer: the earliest
    max(window_end) AS window_end,
    count(*) FILTER (WHERE status = 'ISSUED') AS issued,
    count(*) FILTER (WHERE status = 'REVOKED') AS revoked,
    count(DISTINCT customer_id) AS customers
FROM rewards
GROUP BY group_id, group_name, kind, name, period_index, ref_code;
