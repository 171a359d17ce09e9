-- Transactions and the durable outbox of their messages (chargerd.features.transactions, .outbox).
CREATE TABLE transactions (
    local_id         INTEGER PRIMARY KEY AUTOINCREMENT,
    connector_id     INTEGER NOT NULL,
    id_tag           TEXT    NOT NULL,
    parent_id_tag    TEXT,
    reservation_id   INTEGER,
    meter_start_wh   REAL    NOT NULL,
    start_time       TEXT    NOT NULL,
    transaction_id   INTEGER,            -- given by the CSMS in the StartTransaction result
    id_tag_status    TEXT,               -- the CSMS's verdict on id_tag, once known
    state            TEXT    NOT NULL CHECK (state IN ('active', 'stopped')),
    last_energy_wh   REAL    NOT NULL,   -- persisted every sample: the meterStop after a power cut
    last_energy_time TEXT    NOT NULL,
    stop_reason      TEXT,
    stop_time        TEXT,
    meter_stop_wh    REAL
);
CREATE INDEX transactions_active ON transactions(state) WHERE state = 'active';

CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    action      TEXT    NOT NULL,
    payload     TEXT    NOT NULL,        -- camelCase JSON; transactionId filled at send time
    tx_local_id INTEGER REFERENCES transactions(local_id),
    attempts    INTEGER NOT NULL DEFAULT 0,
    not_before  REAL    NOT NULL DEFAULT 0,  -- epoch seconds of the next try
    created_at  TEXT    NOT NULL
);
