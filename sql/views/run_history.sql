-- One row per run, newest first: status, dates, counts, duration and where its files are.
CREATE OR REPLACE VIEW run_history AS
SELECT
    r.run_id,
    r.status,                               -- RUNNING | SUCCEEDED | PARTIAL | FAILED
    r.as_of,
    r.from_date,
    r.to_date,
    r.started_at,
    r.finished_at,
    epoch(r.finished_at) - epoch(r.started_at) AS seconds,
    len(r.groups) AS groups,
    r.awards,
    r.revocations,
    r.error,
    o.folder                                -- null: the run wrote no files (failed)
FROM runs AS r
LEFT JOIN run_outputs AS o ON o.run_id = r.run_id
ORDER BY r.started_at DESC;
