-- One row per leaderboard window and rank 1-10: who leads, with names instead of ids.
CREATE OR REPLACE VIEW leaderboard_top10 AS
SELECT
    lb.group_id,
    g.name AS group_name,
    t.name AS target_name,
    lb.period_index,
    p.ref_code,
    lb.rank,
    lb.customer_id,
    lb.value,
    lb.last_activity_at                      -- the tie-breaker after value
FROM leaderboard AS lb
JOIN target_groups AS g ON g.group_id = lb.group_id
LEFT JOIN targets AS t ON t.target_id = lb.target_id
LEFT JOIN target_periods AS p ON p.group_id = lb.group_id AND p.period_index = lb.period_index
WHERE lb.rank <= 10;
