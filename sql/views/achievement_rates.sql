-- One row per group and window (period or cycle number): how many scored customers achieved it.
CREATE OR REPLACE VIEW achievement_rates AS
SELECT
    pa.group_id,
    g.name AS group_name,
    pa.period_index,
    pa.ref_code,
    min(pa.window_start) AS window_start,
    max(pa.window_end) AS window_end,
    max(pa.status) AS status,               -- the same for every customer of a fixed period
    count(*) AS customers,
    count(*) FILTER (WHERE pa.achieved) AS achieved,
    round(100.0 * count(*) FILTER (WHERE pa.achieved) / count(*), 1) AS pct_achieved
FROM period_achievements AS pa
JOIN target_groups AS g ON g.group_id = pa.group_id
GROUP BY pa.group_id, g.name, pa.period_index, pa.ref_code;
