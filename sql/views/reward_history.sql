-- One row per issue or revocation of a reward, oldest first per reward: which run did what.
CREATE OR REPLACE VIEW reward_history AS
SELECT
    e.reward_id,
    r.kind,
    r.group_name,
    r.name,
    r.customer_id,
    r.period_index,
    r.ref_code,
    e.action,                               -- ISSUED | REVOKED
    e.run_id,
    e.event_at,
    runs.as_of,                             -- the run's date
    runs.from_date,
    runs.to_date
FROM reward_events AS e
JOIN rewards AS r ON r.reward_id = e.reward_id
LEFT JOIN runs ON runs.run_id = e.run_id;
