-- Registered target groups and their periods, targets and streak levels (SPEC §11).
-- One row of target_groups = one POST v3/targetGroups body that passed validation.
CREATE SEQUENCE IF NOT EXISTS definition_ids START 1000;

CREATE TABLE IF NOT EXISTS target_groups (
    group_id            BIGINT PRIMARY KEY,
    name                VARCHAR NOT NULL,
    tracking_type       VARCHAR NOT NULL,   -- DEFAULT | UNIFIED | STREAK | CAPPING
    evaluation_type     VARCHAR NOT NULL,   -- FIXED_CALENDAR_WINDOW | CYCLIC_WINDOW | PERIOD_AGNOSTIC_WINDOW
    frequency_type      VARCHAR,
    frequency           INTEGER,
    recurring_cycles    INTEGER,
    total_periods       INTEGER,
    time_zone           VARCHAR,            -- null: org.timezone applies
    active              BOOLEAN NOT NULL,
    user_created        BOOLEAN NOT NULL,
    leaderboard_enabled BOOLEAN NOT NULL,
    combination_type    VARCHAR NOT NULL,   -- ALL | ANY
    combination_count   INTEGER NOT NULL,
    streak_continuous   BOOLEAN NOT NULL,
    definition          JSON NOT NULL,      -- the body exactly as given, unknown fields included
    created_at          TIMESTAMPTZ NOT NULL
);

-- One row per fixed calendar period, given or generated; CYCLIC and PERIOD_AGNOSTIC groups have none.
CREATE TABLE IF NOT EXISTS target_periods (
    group_id     BIGINT NOT NULL,
    period_id    BIGINT PRIMARY KEY,
    period_index INTEGER NOT NULL,          -- 1, 2, ... in definition order
    ref_code     VARCHAR,                   -- null for generated periods
    start_date   DATE NOT NULL,             -- local date, inclusive
    end_date     DATE NOT NULL,             -- local date, inclusive
    status       VARCHAR NOT NULL           -- as of registration; runs recompute it
);

-- One row per target, including the derived <name>_ReturnBill legs (parent_target_id set).
CREATE TABLE IF NOT EXISTS targets (
    group_id         BIGINT NOT NULL,
    target_id        BIGINT PRIMARY KEY,
    name             VARCHAR NOT NULL,
    target_entity    VARCHAR NOT NULL,
    target_type      VARCHAR NOT NULL,
    event_name       VARCHAR,
    expression       VARCHAR,
    enrolment_method VARCHAR NOT NULL,
    parent_target_id BIGINT,                -- the user target a _ReturnBill leg belongs to
    active           BOOLEAN NOT NULL DEFAULT true  -- inactive targets are kept but never scored
);

-- One row per streak level of a STREAK group (given in any order; the engine sorts by count).
CREATE TABLE IF NOT EXISTS streak_levels (
    group_id                 BIGINT NOT NULL,
    streak_id                BIGINT PRIMARY KEY,
    name                     VARCHAR NOT NULL,
    target_count_of_sequence INTEGER NOT NULL
);

-- One row per target and default value as the envelope lists it: one per period for FIXED groups
-- (the last given value repeating), else one per given value (cycle k uses value k, the last
-- repeating). Keeps the ids of `defaultValues[].id` stable across `groups show`.
CREATE TABLE IF NOT EXISTS target_default_values (
    group_id      BIGINT NOT NULL,
    target_id     BIGINT NOT NULL,          -- user target or _ReturnBill leg
    value_index   INTEGER NOT NULL,         -- 1, 2, ...: the period or cycle number
    value_id      BIGINT PRIMARY KEY,
    period_id     BIGINT,                   -- null for CYCLIC and PERIOD_AGNOSTIC groups
    default_value DECIMAL(38, 4) NOT NULL
);
