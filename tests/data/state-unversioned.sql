-- A state store as written by monitord before the schema was versioned (commit 59560f6):
-- its tables, meta.schema_version = '1', PRAGMA user_version 0, and a little data.
BEGIN TRANSACTION;
CREATE TABLE approvals (
    host TEXT PRIMARY KEY, answer TEXT NOT NULL, at REAL NOT NULL, by TEXT
);
CREATE TABLE check_state (
    check_id      TEXT PRIMARY KEY,
    status        INTEGER NOT NULL,
    hard          INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    last_run      REAL NOT NULL,
    last_change   REAL NOT NULL,
    problem_since REAL,
    last_result   TEXT,
    incident_id   INTEGER
);
INSERT INTO "check_state" VALUES('web1/ping',2,1,3,1000.0,940.0,940.0,'{"status": "critical", "reason": "timeout", "summary": "no answer", "duration": 1.0, "started_at": 1000.0, "values": {}}',1);
CREATE TABLE escalation (host TEXT PRIMARY KEY, state TEXT NOT NULL);
INSERT INTO "escalation" VALUES('web1','{"phase": "dispatched", "level": 3, "ladder": "host_down", "check": "ping", "incident_id": 1}');
CREATE TABLE heartbeats (
    host TEXT PRIMARY KEY, at REAL NOT NULL, status INTEGER NOT NULL, message TEXT NOT NULL
);
CREATE TABLE incidents (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    host       TEXT NOT NULL,
    check_name TEXT NOT NULL,
    kind       TEXT NOT NULL,
    opened_at  REAL NOT NULL,
    detected_at REAL NOT NULL,
    closed_at  REAL,
    summary    TEXT NOT NULL
);
INSERT INTO "incidents" VALUES(1,'web1','ping','ping',1000.0,940.0,NULL,'no answer');
CREATE TABLE journal (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          REAL NOT NULL,
    event       TEXT NOT NULL,
    host        TEXT,
    check_name  TEXT,
    incident_id INTEGER,
    decision    TEXT,
    reason      TEXT,
    outcome     TEXT,
    ref         INTEGER,
    detail      TEXT
);
INSERT INTO "journal" VALUES(1,1000.0,'confirmed','web1','ping',1,NULL,NULL,NULL,NULL,'{"summary": "no answer"}');
CREATE TABLE maintenance (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    target  TEXT NOT NULL,          -- host:NAME, group:NAME or tag:NAME
    starts  REAL NOT NULL,
    ends    REAL NOT NULL,
    reason  TEXT NOT NULL,
    created_by TEXT
);
INSERT INTO "maintenance" VALUES(1,'host:web1',2000.0,3000.0,'kernel','ops');
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('schema_version','1');
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    integration TEXT NOT NULL,
    dedup_key   TEXT NOT NULL,
    action      TEXT NOT NULL,
    recipients  TEXT NOT NULL DEFAULT '',  -- e-mail addresses the message names, sorted
    message     TEXT NOT NULL,          -- remediation.pagers.Message as JSON
    created_at  REAL NOT NULL,
    due         REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL DEFAULT 'pending',  -- pending, delivered, dead
    last_error  TEXT,
    done_at     REAL,
    UNIQUE (integration, dedup_key, action, recipients)
);
INSERT INTO "outbox" VALUES(1,'mail','monitord-page-1','trigger','','{"dedup_key": "monitord-page-1"}',1000.0,1000.0,0,'pending',NULL,NULL);
CREATE TABLE pages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER,
    host        TEXT,
    kind        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    policy      TEXT NOT NULL,
    summary     TEXT NOT NULL,
    step        INTEGER NOT NULL DEFAULT 0,
    opened_at   REAL NOT NULL,
    next_at     REAL,              -- when the next tier is paged unless acknowledged
    paged       TEXT NOT NULL DEFAULT '[]',  -- [integration, dedup_key] pairs paged so far
    acked_at    REAL,
    acked_by    TEXT,
    ack_sent    INTEGER NOT NULL DEFAULT 0,
    closed_at   REAL
);
CREATE TABLE quarantine (host TEXT PRIMARY KEY, since REAL NOT NULL, reason TEXT NOT NULL, by TEXT);
CREATE TABLE reports (
    incident_id  INTEGER PRIMARY KEY,   -- the incident the report (障害報告) is about
    root_cause   TEXT,                  -- written by the engineer (monitord report edit)
    prevention   TEXT,
    submitted_at REAL,                  -- when the report went to the customer (monitord report submit)
    submitted_by TEXT
);
CREATE TABLE sla_timers (
    incident_id INTEGER NOT NULL,
    name        TEXT NOT NULL,     -- engineer_on_site, replacement_on_network
    host        TEXT,
    started_at  REAL NOT NULL,
    due         REAL NOT NULL,
    stopped_at  REAL,
    breached_at REAL,
    PRIMARY KEY (incident_id, name)
);
CREATE INDEX incidents_open ON incidents (closed_at);
CREATE INDEX journal_incident ON journal (incident_id);
CREATE INDEX outbox_pending ON outbox (state, due);
CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
    BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
    BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('incidents',1);
INSERT INTO "sqlite_sequence" VALUES('journal',1);
INSERT INTO "sqlite_sequence" VALUES('maintenance',1);
INSERT INTO "sqlite_sequence" VALUES('outbox',1);
COMMIT;
