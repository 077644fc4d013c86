-- Run bookkeeping beyond SPEC §11 (issue 7). Additive: no SPEC table changes shape.

-- One row per committed run that wrote files: where its folder is, so that the next run can
-- finish a rename that a crash cut short, whatever --out that next run uses.
CREATE TABLE IF NOT EXISTS run_outputs (
    run_id  VARCHAR PRIMARY KEY,
    folder  VARCHAR NOT NULL,              -- absolute path of <out>/<run_id>
    format  VARCHAR NOT NULL               -- csv | parquet | jsonl
);

-- The reward ledger's history: one row per issue or revocation, never updated. The `rewards`
-- row holds only the latest state; this says which run issued, revoked and re-issued it.
CREATE TABLE IF NOT EXISTS reward_events (
    run_id    VARCHAR NOT NULL,
    reward_id VARCHAR NOT NULL,
    action    VARCHAR NOT NULL,            -- ISSUED | REVOKED
    event_at  TIMESTAMPTZ NOT NULL
);
