-- 0005: the account's private preferences (app.bsky.actor.getPreferences/putPreferences).
-- One row per preference object, kept in the order they were put (id); `name` is its $type.
-- Served only to the account itself; never part of the repo or the firehose.
CREATE TABLE preference (
    id         INTEGER PRIMARY KEY,
    did        TEXT NOT NULL,
    name       TEXT NOT NULL,
    value_json TEXT NOT NULL
) STRICT;
CREATE INDEX preference_did ON preference (did, id);
