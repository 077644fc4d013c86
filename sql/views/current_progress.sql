-- One row per group, user target and customer: their latest started window, as the last run
-- that scored it left it ("where does this customer stand right now?").
CREATE OR REPLACE VIEW current_progress AS
SELECT
    g.name AS group_name,
    tp.group_id,
    t.name AS target_name,
    tp.target_id,
    tp.customer_id,
    tp.period_index,
    tp.ref_code,
    tp.window_start,
    tp.window_end,
    tp.status,
    tp.value,
    tp.target_value,
    CASE WHEN tp.target_value > 0
         THEN round(100 * tp.value / tp.target_value, 1) END AS pct_of_target,  -- null: no target
    tp.achieved,
    tp.achieved_at,
    tp.last_activity_at,
    tp.run_id                                                  -- the run that computed the row
FROM target_progress AS tp
JOIN target_groups AS g ON g.group_id = tp.group_id
LEFT JOIN targets AS t ON t.target_id = tp.target_id
QUALIFY row_number() OVER (
    PARTITION BY tp.group_id, tp.target_id, tp.customer_id
    ORDER BY tp.window_start DESC NULLS LAST, tp.period_index DESC
) = 1;
