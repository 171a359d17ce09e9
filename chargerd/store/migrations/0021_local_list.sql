-- The Local Authorization List (chargerd.features.local_list): what the CSMS sent
-- with SendLocalList, and the version of that list.  idTags are CiString20,
-- case-insensitive (NOCASE), dates ISO 8601 UTC as in auth_cache.  The version
-- and the entries change in one SQLite transaction, so the disk always holds a
-- list the CSMS sent whole together with its own version.
CREATE TABLE local_list (
    id_tag        TEXT PRIMARY KEY COLLATE NOCASE,
    status        TEXT NOT NULL
                  CHECK (status IN ('Accepted', 'Blocked', 'Expired', 'Invalid', 'ConcurrentTx')),
    expiry_date   TEXT,
    parent_id_tag TEXT
);

CREATE TABLE local_list_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
