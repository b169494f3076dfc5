"""Persistence for ``--data-dir``: every change goes to SQLite (WAL) before the answer.

The broker keeps its working state in memory; the store mirrors each change and
the server commits once per request, before the response is written, so a
process stopped at any moment restarts with every acknowledged message, lock,
delivery count and sequence number.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .model import Entity, Message, Settings
from .rules import Filter, filter_from_json, rule_to_json


@dataclass
class EntityRecord:
    name: str
    kind: str
    settings: Settings
    next_seq: int
    created: float
    updated: float


@dataclass
class Snapshot:
    """What a store saved, as plain records: Broker.restore rebuilds the broker from it."""

    clock_offset: Optional[float] = None
    entities: List[EntityRecord] = field(default_factory=list)  # queues, topics, subscriptions
    rules: Dict[str, Dict[str, Filter]] = field(default_factory=dict)
    messages: List[Tuple[str, Message]] = field(default_factory=list)
    completed: List[Tuple[str, str, int]] = field(default_factory=list)
    seen: List[Tuple[str, str, float]] = field(default_factory=list)
    forgotten: List[Tuple[str, int]] = field(default_factory=list)


class NullStore:
    """In-memory mode: nothing is written."""

    def save_entity(self, ent: "Entity") -> None:
        pass

    def delete_entity(self, ent: "Entity") -> None:
        pass

    def insert_message(self, ent: "Entity", msg: "Message") -> None:
        pass

    def update_message(self, ent: "Entity", msg: "Message") -> None:
        pass

    def delete_message(self, ent: "Entity", seq: int) -> None:
        pass

    def save_meta(self, key: str, value: Any) -> None:
        pass

    def save_completed(self, ent: "Entity", message_id: str, n: int) -> None:
        pass

    def forget_completed(self, ent: "Entity", message_id: str, forgotten: int) -> None:
        pass

    def clear_completed(self) -> None:
        pass

    def save_seen(self, ent: "Entity", message_id: str, t: float) -> None:
        pass

    def forget_seen(self, ent: "Entity", message_id: str) -> None:
        pass

    def clear_seen(self) -> None:
        pass

    def save_rules(self, ent: "Entity") -> None:
        pass

    def commit(self) -> None:
        pass

    def close(self) -> None:
        pass


SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
  key TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, settings TEXT NOT NULL,
  next_seq INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
  ekey TEXT NOT NULL, seq INTEGER NOT NULL, message_id TEXT NOT NULL, body BLOB NOT NULL,
  content_type TEXT, props TEXT, custom TEXT, ttl REAL, enqueued_at REAL NOT NULL,
  scheduled_at REAL, enq_seq INTEGER NOT NULL, dc INTEGER NOT NULL, lock_token TEXT,
  locked_until REAL NOT NULL, state TEXT NOT NULL, size INTEGER NOT NULL,
  PRIMARY KEY (ekey, seq));
CREATE TABLE IF NOT EXISTS completed (
  ekey TEXT NOT NULL, message_id TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (ekey, message_id));
CREATE TABLE IF NOT EXISTS completed_forgotten (ekey TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rules (ekey TEXT PRIMARY KEY, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen_ids (
  ekey TEXT NOT NULL, message_id TEXT NOT NULL, t REAL NOT NULL, PRIMARY KEY (ekey, message_id));
"""


class SqliteStore(NullStore):
    def __init__(self, data_dir: str):
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.join(data_dir, "peeklock-emulator.sqlite3")
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.in_tx = False

    def _tx(self) -> sqlite3.Connection:
        if not self.in_tx:
            self.db.execute("BEGIN")
            self.in_tx = True
        return self.db

    def commit(self) -> None:
        if self.in_tx:
            self.db.execute("COMMIT")
            self.in_tx = False

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self.db.close()

    def save_entity(self, ent: "Entity") -> None:
        if ent.kind == "deadletter":
            return
        self._tx().execute(
            "INSERT INTO entities(key,name,kind,settings,next_seq,created,updated) VALUES(?,?,?,?,?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET name=excluded.name, kind=excluded.kind, settings=excluded.settings,"
            " next_seq=excluded.next_seq, updated=excluded.updated",
            (ent.key, ent.name, ent.kind, json.dumps(ent.settings.to_json()), ent.next_seq, ent.created, ent.updated),
        )

    def delete_entity(self, ent: "Entity") -> None:
        db = self._tx()
        keys = [ent.key] + ([ent.dlq.key] if ent.dlq is not None else [])
        for k in keys:
            db.execute("DELETE FROM messages WHERE ekey=?", (k,))
            db.execute("DELETE FROM completed WHERE ekey=?", (k,))
            db.execute("DELETE FROM completed_forgotten WHERE ekey=?", (k,))
            db.execute("DELETE FROM rules WHERE ekey=?", (k,))
            db.execute("DELETE FROM seen_ids WHERE ekey=?", (k,))
        db.execute("DELETE FROM entities WHERE key=?", (ent.key,))

    def insert_message(self, ent: "Entity", m: "Message") -> None:
        self._tx().execute(
            "INSERT OR REPLACE INTO messages VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                ent.key,
                m.seq,
                m.message_id,
                m.body,
                m.content_type,
                json.dumps(m.props) if m.props else None,
                json.dumps(m.custom) if m.custom else None,
                m.ttl,
                m.enqueued_at,
                m.scheduled_at,
                m.enq_seq,
                m.dc,
                m.lock_token,
                m.locked_until,
                m.state,
                m.size,
            ),
        )

    def update_message(self, ent: "Entity", m: "Message") -> None:
        self._tx().execute(
            "UPDATE messages SET dc=?, lock_token=?, locked_until=?, state=? WHERE ekey=? AND seq=?",
            (m.dc, m.lock_token, m.locked_until, m.state, ent.key, m.seq),
        )

    def delete_message(self, ent: "Entity", seq: int) -> None:
        self._tx().execute("DELETE FROM messages WHERE ekey=? AND seq=?", (ent.key, seq))

    def save_completed(self, ent: "Entity", message_id: str, n: int) -> None:
        # REPLACE deletes the old row and inserts one with the next rowid: rowid order is the
        # order of the last completions, which load() restores
        self._tx().execute("INSERT OR REPLACE INTO completed VALUES(?,?,?)", (ent.key, message_id, n))

    def forget_completed(self, ent: "Entity", message_id: str, forgotten: int) -> None:
        db = self._tx()
        db.execute("DELETE FROM completed WHERE ekey=? AND message_id=?", (ent.key, message_id))
        db.execute("INSERT OR REPLACE INTO completed_forgotten VALUES(?,?)", (ent.key, forgotten))

    def clear_completed(self) -> None:
        db = self._tx()
        db.execute("DELETE FROM completed")
        db.execute("DELETE FROM completed_forgotten")

    def clear_seen(self) -> None:
        self._tx().execute("DELETE FROM seen_ids")

    def save_seen(self, ent: "Entity", message_id: str, t: float) -> None:
        self._tx().execute("INSERT OR REPLACE INTO seen_ids VALUES(?,?,?)", (ent.key, message_id, t))

    def forget_seen(self, ent: "Entity", message_id: str) -> None:
        self._tx().execute("DELETE FROM seen_ids WHERE ekey=? AND message_id=?", (ent.key, message_id))

    def save_rules(self, ent: "Entity") -> None:
        self._tx().execute(
            "INSERT OR REPLACE INTO rules VALUES(?,?)",
            (ent.key, json.dumps({n: rule_to_json(f) for n, f in ent.rules.items()})),
        )

    def save_meta(self, key: str, value: Any) -> None:
        self._tx().execute("INSERT OR REPLACE INTO meta VALUES(?,?)", (key, json.dumps(value)))

    def load(self) -> Snapshot:
        """Everything saved, as records for Broker.restore."""
        snap = Snapshot()
        for k, v in self.db.execute("SELECT k, v FROM meta"):
            if k == "clock_offset":
                off = json.loads(v)
                if isinstance(off, (int, float)):
                    snap.clock_offset = float(off)
        order = {"queue": 0, "topic": 1, "subscription": 2}
        rows = sorted(
            self.db.execute("SELECT key,name,kind,settings,next_seq,created,updated FROM entities"),
            key=lambda r: order.get(r[2], 3),
        )
        snap.entities = [
            EntityRecord(name, kind, Settings.from_json(json.loads(settings)), next_seq, created, updated)
            for _key, name, kind, settings, next_seq, created, updated in rows
        ]
        snap.rules = {
            ekey: {n: filter_from_json(f) for n, f in json.loads(spec).items()}
            for ekey, spec in self.db.execute("SELECT ekey, spec FROM rules")
        }
        for row in self.db.execute(
            "SELECT ekey,seq,message_id,body,content_type,props,custom,ttl,enqueued_at,scheduled_at,"
            "enq_seq,dc,lock_token,locked_until,state,size FROM messages ORDER BY ekey, seq"
        ):
            custom = json.loads(row[6]) if row[6] else None
            snap.messages.append(
                (
                    row[0],
                    Message(
                        seq=row[1],
                        message_id=row[2],
                        body=bytes(row[3]),
                        content_type=row[4],
                        props=json.loads(row[5]) if row[5] else None,
                        custom=[tuple(c) for c in custom] if custom else None,
                        ttl=row[7],
                        enqueued_at=row[8],
                        expires_at=0.0,
                        scheduled_at=row[9],
                        enq_seq=row[10],
                        dc=row[11],
                        lock_token=row[12],
                        locked_until=row[13],
                        state=row[14],
                        size=row[15],
                    ),
                )
            )
        snap.completed = list(self.db.execute("SELECT ekey, message_id, n FROM completed ORDER BY rowid"))
        snap.seen = list(self.db.execute("SELECT ekey, message_id, t FROM seen_ids ORDER BY t"))
        snap.forgotten = list(self.db.execute("SELECT ekey, n FROM completed_forgotten"))
        return snap


def _finite(x: float) -> Any:
    return None if math.isinf(x) else x
