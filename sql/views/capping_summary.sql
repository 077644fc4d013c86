-- One row per CAPPING group, target and window: points earned, allowed under the cap, and cut.
CREATE OR REPLACE VIEW capping_summary AS
SELECT
    c.group_id,
    g.name AS group_name,
    c.target_id,
    c.period_index,
    count(*) AS customers,
    count(*) FILTER (WHERE c.excess > 0) AS customers_capped,
    sum(c.earned) AS earned,
    sum(c.allowed) AS allowed,
    sum(c.excess) AS excess                  -- points not to be granted
FROM capping AS c
JOIN target_groups AS g ON g.group_id = c.group_id
GROUP BY c.group_id, g.name, c.target_id, c.period_index;
