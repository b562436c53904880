"""Start as a broken release does: migrate the recorder's database one schema version up,
then hang without ever opening the web port."""

import os
import sqlite3
import time

DB = "/config/home-assistant_v2.db"
MIGRATED_TO = 999

if os.path.exists(DB):
    db = sqlite3.connect(DB)
    with db:
        db.execute("INSERT INTO schema_changes (schema_version, changed) "
                   "VALUES (?, datetime('now'))", (MIGRATED_TO,))
    db.close()
    print(f"recorder database migrated to schema {MIGRATED_TO}", flush=True)
while True:
    time.sleep(3600)
