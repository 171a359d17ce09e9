-- Charging profiles (chargerd.features.smart_charging), kept across restarts and
-- power cuts.  The profile itself is stored as the CSMS sent it (csChargingProfiles,
-- JSON, camelCase) and parsed by the same code when read back; the columns beside it
-- are what replacement and ClearChargingProfile select on.  A TxProfile names the
-- local transaction it belongs to (tx_local_id) and is deleted when that ends.
CREATE TABLE charging_profiles (
    id            INTEGER PRIMARY KEY,          -- chargingProfileId
    connector_id  INTEGER NOT NULL CHECK (connector_id >= 0),
    purpose       TEXT NOT NULL
                  CHECK (purpose IN ('ChargePointMaxProfile', 'TxDefaultProfile', 'TxProfile')),
    stack_level   INTEGER NOT NULL CHECK (stack_level >= 0),
    tx_local_id   INTEGER,
    profile       TEXT NOT NULL,
    installed_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX charging_profiles_slot
    ON charging_profiles(connector_id, purpose, stack_level);
