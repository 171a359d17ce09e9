-- GetDiagnostics / GetLog uploads under way (chargerd.features.upload_journal): one row
-- per slot while an accepted upload has not reported its final status, so that an
-- upload cut by a restart (kill -9, power cut, Reset) is closed after it with
-- UploadFailed / UploadFailure: the CSMS always gets a final status.  The location is
-- kept with its password masked (for chargerctl only; it is never used again).
CREATE TABLE upload_job (
    slot        TEXT PRIMARY KEY CHECK (slot IN ('diagnostics', 'log')),
    kind        TEXT NOT NULL,
    request_id  INTEGER,
    filename    TEXT NOT NULL,
    location    TEXT NOT NULL,
    accepted_at TEXT NOT NULL
);
