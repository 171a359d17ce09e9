-- The authorization cache (chargerd.features.auth): the last IdTagInfo the CSMS
-- gave for each idTag.  idTags are CiString20, case-insensitive: NOCASE makes
-- the primary key and every lookup ignore case.  Dates are ISO 8601 UTC with a
-- 'Z' and millisecond precision (chargerd.clock.iso), so they compare as text.
CREATE TABLE auth_cache (
    id_tag        TEXT PRIMARY KEY COLLATE NOCASE,
    status        TEXT NOT NULL
                  CHECK (status IN ('Accepted', 'Blocked', 'Expired', 'Invalid', 'ConcurrentTx')),
    expiry_date   TEXT,
    parent_id_tag TEXT,
    updated_at    TEXT NOT NULL
);
CREATE INDEX auth_cache_updated_at ON auth_cache(updated_at);
