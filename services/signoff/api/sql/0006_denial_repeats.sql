-- A refused request repeated within a minute (same gate, reason, actor and credential) is one row counting its
-- repeats: anyone may send requests naming a gate (its id is in every notification), and a row per request would
-- let an unauthenticated client grow a gate's audit trail without bound. The metric still counts every refusal.
ALTER TABLE "{schema}".access_denials ADD COLUMN repeated integer NOT NULL DEFAULT 0;
