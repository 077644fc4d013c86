-- Scoring outputs (SPEC §11). customer_id starts as BIGINT; the first load of text ids turns it
-- into VARCHAR in every table while they are empty (pipeline.workspace.set_customer_id_type).

-- One row per enrolled customer, user target and started window; returns folded into value.
CREATE TABLE IF NOT EXISTS target_progress (
    group_id         BIGINT NOT NULL,
    target_id        BIGINT NOT NULL,
    customer_id      BIGINT NOT NULL,
    period_index     INTEGER NOT NULL,      -- period number, or cycle number
    ref_code         VARCHAR,               -- null for generated periods and cycles
    window_start     TIMESTAMP,             -- local: 00:00 of the first day
    window_end       TIMESTAMP,             -- local: last instant of the last day; null while a PERIOD_AGNOSTIC cycle is open
    status           VARCHAR NOT NULL,      -- NOT_STARTED | RUNNING | ENDED as of the run's date
    value            DECIMAL(38, 4) NOT NULL,
    target_value     DECIMAL(38, 4),
    achieved         BOOLEAN NOT NULL,
    achieved_at      TIMESTAMPTZ,           -- the record at which the running value reached the target
    last_activity_at TIMESTAMPTZ,
    run_id           VARCHAR NOT NULL
);

-- One row per enrolled customer and started window: did the group's condition hold?
CREATE TABLE IF NOT EXISTS period_achievements (
    group_id         BIGINT NOT NULL,
    customer_id      BIGINT NOT NULL,
    period_index     INTEGER NOT NULL,
    ref_code         VARCHAR,
    window_start     TIMESTAMP,
    window_end       TIMESTAMP,
    status           VARCHAR NOT NULL,
    achieved         BOOLEAN NOT NULL,
    achieved_at      TIMESTAMPTZ,
    targets_achieved INTEGER NOT NULL,
    targets_total    INTEGER NOT NULL
);

-- One row per run of consecutive achieved windows of a STREAK group.
CREATE TABLE IF NOT EXISTS streak_runs (
    group_id           BIGINT NOT NULL,
    customer_id        BIGINT NOT NULL,
    start_period_index INTEGER NOT NULL,
    end_period_index   INTEGER NOT NULL,
    length             INTEGER NOT NULL,
    is_current         BOOLEAN NOT NULL,
    graces_used        INTEGER NOT NULL
);

-- One row per customer of a STREAK group: where they stand as of the run's date.
CREATE TABLE IF NOT EXISTS streak_progress (
    group_id         BIGINT NOT NULL,
    customer_id      BIGINT NOT NULL,
    current_count    INTEGER NOT NULL,
    longest_count    INTEGER NOT NULL,
    levels_achieved  INTEGER NOT NULL,
    next_level_name  VARCHAR,              -- null once every level is achieved
    next_level_count INTEGER
);

-- Reward ledger: one row per reward identity; status moves ISSUED <-> REVOKED, never deleted.
CREATE TABLE IF NOT EXISTS rewards (
    reward_id      VARCHAR PRIMARY KEY,    -- hash of (kind, group name, name, customer, window key)
    kind           VARCHAR NOT NULL,       -- TARGET_ACHIEVED | UNIFIED_ACHIEVED | STREAK_LEVEL_ACHIEVED
    group_id       BIGINT NOT NULL,
    group_name     VARCHAR NOT NULL,
    name           VARCHAR NOT NULL,       -- target, group (UNIFIED) or level name
    customer_id    BIGINT NOT NULL,
    period_index   INTEGER,
    ref_code       VARCHAR,
    window_start   TIMESTAMP,
    window_end     TIMESTAMP,
    value          DECIMAL(38, 4),
    target_value   DECIMAL(38, 4),
    achieved_at    TIMESTAMPTZ,
    status         VARCHAR NOT NULL,       -- ISSUED | REVOKED
    issued_run_id  VARCHAR,
    revoked_run_id VARCHAR
);

-- One row per customer and window of a CAPPING group.
CREATE TABLE IF NOT EXISTS capping (
    group_id     BIGINT NOT NULL,
    target_id    BIGINT NOT NULL,
    customer_id  BIGINT NOT NULL,
    period_index INTEGER NOT NULL,
    earned       DECIMAL(38, 4) NOT NULL,
    cap          DECIMAL(38, 4),
    allowed      DECIMAL(38, 4) NOT NULL,
    excess       DECIMAL(38, 4) NOT NULL,
    capped_at    TIMESTAMPTZ               -- the points row at which the running sum passed the cap
);

-- One row per points row of a CAPPING group: how much of it the cap allows.
CREATE TABLE IF NOT EXISTS capping_adjustments (
    group_id       BIGINT NOT NULL,
    target_id      BIGINT NOT NULL,
    customer_id    BIGINT NOT NULL,
    period_index   INTEGER NOT NULL,
    points_id      VARCHAR NOT NULL,
    awarded_at     TIMESTAMPTZ NOT NULL,
    points         DECIMAL(38, 4) NOT NULL,
    allowed_points DECIMAL(38, 4) NOT NULL,
    excess_points  DECIMAL(38, 4) NOT NULL
);

-- One row per customer with a counted record in a window of a leaderboard group.
CREATE TABLE IF NOT EXISTS leaderboard (
    group_id         BIGINT NOT NULL,
    target_id        BIGINT NOT NULL,
    period_index     INTEGER NOT NULL,
    customer_id      BIGINT NOT NULL,
    value            DECIMAL(38, 4) NOT NULL,
    last_activity_at TIMESTAMPTZ,
    rank             INTEGER NOT NULL       -- 1, 2, 3 ...; ties get distinct ranks
);

-- Run history: one row per `milestones run`.
CREATE TABLE IF NOT EXISTS runs (
    run_id      VARCHAR PRIMARY KEY,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    status      VARCHAR NOT NULL,           -- RUNNING | SUCCEEDED | PARTIAL | FAILED
    as_of       DATE NOT NULL,
    from_date   DATE,
    to_date     DATE,
    groups      VARCHAR[],
    awards      INTEGER,
    revocations INTEGER,
    error       VARCHAR
);

-- Load history: one row per file of a `milestones load`.
CREATE TABLE IF NOT EXISTS loads (
    load_id       BIGINT NOT NULL,
    kind          VARCHAR NOT NULL,
    path          VARCHAR NOT NULL,
    rows_read     BIGINT NOT NULL,
    rows_loaded   BIGINT NOT NULL,
    rows_rejected BIGINT NOT NULL,
    loaded_at     TIMESTAMPTZ NOT NULL
);

-- One row per refused input row, with the raw record and a readable reason.
CREATE TABLE IF NOT EXISTS rejects (
    load_id    BIGINT NOT NULL,
    kind       VARCHAR NOT NULL,
    path       VARCHAR NOT NULL,
    row_number BIGINT,                      -- 1-based data row in the file (header not counted)
    record     VARCHAR,                     -- the raw row as JSON
    reason     VARCHAR NOT NULL
);
