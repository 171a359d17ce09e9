-- Reservations (chargerd.features.reservations): one row per reservation the
-- station accepted with ReserveNow and that has not ended yet.  connector_id 0
-- is a reservation of "any connector".  expiry_date is ISO 8601 UTC with a 'Z'
-- (chargerd.clock.iso), so it orders as text.
CREATE TABLE reservations (
    reservation_id INTEGER PRIMARY KEY,
    connector_id   INTEGER NOT NULL CHECK (connector_id >= 0),
    id_tag         TEXT    NOT NULL,
    parent_id_tag  TEXT,
    expiry_date    TEXT    NOT NULL,
    created_at     TEXT    NOT NULL
);
CREATE INDEX reservations_expiry ON reservations(expiry_date);
