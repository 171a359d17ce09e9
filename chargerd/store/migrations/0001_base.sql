-- Base schema: the generic key/value room and the OCPP configuration keys.
-- Migrations run inside one transaction opened by the store: no BEGIN/COMMIT here.

CREATE TABLE kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE ocpp_config (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
