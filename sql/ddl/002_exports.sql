-- The loaded exports (SPEC §3): what `milestones load` lets in and what customers are scored on.
-- No primary keys: enrolments' key holds nullable columns and an index would block the switch of
-- customer_id to VARCHAR; loads upsert on the key themselves (pipeline.loading.load).
-- customer_id starts as BIGINT; the first load of text ids turns it into VARCHAR while the tables
-- are empty (pipeline.workspace.set_customer_id_type). Extra export columns are added by loads
-- (ALTER TABLE ADD COLUMN): DECIMAL(18,4) when numeric-looking at their first load, else VARCHAR.

-- One row per bill or return; key txn_id.
CREATE TABLE IF NOT EXISTS transactions (
    txn_id        VARCHAR NOT NULL,
    customer_id   BIGINT NOT NULL,
    txn_time      TIMESTAMPTZ NOT NULL,     -- an instant; offset-less input was org.timezone local time
    amount        DECIMAL(18, 4) NOT NULL,  -- net sales value
    type          VARCHAR NOT NULL DEFAULT 'REGULAR',  -- REGULAR | RETURN
    parent_txn_id VARCHAR,                  -- the bill a return belongs to
    store_id      VARCHAR,
    gross_amount  DECIMAL(18, 4) NOT NULL,  -- defaults to amount
    discount      DECIMAL(18, 4) NOT NULL DEFAULT 0,
    qty           DECIMAL(18, 4)            -- total quantity; null when the export has none
);

-- One row per line of a bill or return; key (txn_id, line_no).
CREATE TABLE IF NOT EXISTS line_items (
    txn_id    VARCHAR NOT NULL,             -- a loaded transaction
    line_no   BIGINT NOT NULL,
    qty       DECIMAL(18, 4) NOT NULL,
    amount    DECIMAL(18, 4) NOT NULL,      -- net line value
    item_code VARCHAR,
    rate      DECIMAL(18, 4),
    value     DECIMAL(18, 4) NOT NULL,      -- gross line value; defaults to amount
    discount  DECIMAL(18, 4)
);

-- One row per behavioural event; attributes are extra columns; key event_id.
CREATE TABLE IF NOT EXISTS events (
    event_id    VARCHAR NOT NULL,
    customer_id BIGINT NOT NULL,
    event_name  VARCHAR NOT NULL,
    event_time  TIMESTAMPTZ NOT NULL,
    store_id    VARCHAR
);

-- One row per points award; key points_id.
CREATE TABLE IF NOT EXISTS points (
    points_id    VARCHAR NOT NULL,
    customer_id  BIGINT NOT NULL,
    awarded_at   TIMESTAMPTZ NOT NULL,
    points       DECIMAL(18, 4) NOT NULL,
    points_type  VARCHAR NOT NULL,          -- REGULAR | PROMOTIONAL
    store_id     VARCHAR,
    txn_id       VARCHAR,
    promotion_id VARCHAR
);

-- One row per store; key store_id.
CREATE TABLE IF NOT EXISTS stores (
    store_id   VARCHAR NOT NULL,
    zone_id    VARCHAR,
    concept_id VARCHAR,
    name       VARCHAR
);

-- One row per customer enrolment in a group, optionally narrowed to a target and/or a period;
-- key (group_name, customer_id, target_name, period_ref), nulls matching nulls.
CREATE TABLE IF NOT EXISTS enrolments (
    group_name      VARCHAR NOT NULL,       -- matched to groups trimmed and case-insensitively
    customer_id     BIGINT NOT NULL,
    target_name     VARCHAR,
    period_ref      VARCHAR,                -- a period refCode
    enrolled_at     TIMESTAMPTZ,
    unenrolled_at   TIMESTAMPTZ,
    target_value    DECIMAL(18, 4),         -- the customer's own target (a goal, for userCreated groups)
    initial_balance DECIMAL(18, 4)
);

-- load_id of `loads` and `rejects`: one per loaded file.
CREATE SEQUENCE IF NOT EXISTS load_ids START 1;
