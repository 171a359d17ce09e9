-- Firmware updates (chargerd.features.firmware): the one UpdateFirmware or
-- SignedUpdateFirmware under way.  Kept so that a retrieveDate in the future, a
-- download interrupted by a restart and the installation's outcome (reported after
-- the restart the installer asks for) survive the process.  One row at most: a new
-- request replaces the previous one.  Dates ISO 8601 UTC.
CREATE TABLE firmware_job (
    id                  INTEGER PRIMARY KEY CHECK (id = 1),
    kind                TEXT NOT NULL CHECK (kind IN ('plain', 'signed')),
    request_id          INTEGER,
    location            TEXT NOT NULL,
    retrieve_date       TEXT NOT NULL,
    install_date        TEXT,
    retries             INTEGER NOT NULL,
    retry_interval      INTEGER NOT NULL,
    signing_certificate TEXT,
    signature           TEXT,
    phase               TEXT NOT NULL
                        CHECK (phase IN ('scheduled', 'downloading', 'installing',
                                         'rebooting', 'done')),
    status              TEXT,
    previous_version    TEXT,
    availability        TEXT,
    updated_at          TEXT NOT NULL
);
