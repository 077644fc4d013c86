-- One row per STREAK group and streak length: how many customers have that current count and
-- how many have it as their longest.
CREATE OR REPLACE VIEW streak_distribution AS
WITH current_counts AS (
    SELECT group_id, current_count AS length, count(*) AS n FROM streak_progress GROUP BY ALL
),
longest_counts AS (
    SELECT group_id, longest_count AS length, count(*) AS n FROM streak_progress GROUP BY ALL
)
SELECT
    group_id,
    g.name AS group_name,
    length,
    coalesce(c.n, 0) AS customers_current,
    coalesce(l.n, 0) AS customers_longest
FROM current_counts AS c
FULL JOIN longest_counts AS l USING (group_id, length)
JOIN target_groups AS g USING (group_id);
