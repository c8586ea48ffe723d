"""The event store: users, items and events in SQL, through SQLAlchemy 2 Core.

SQLite by default (one file, WAL mode, synchronous FULL: a commit is on disk before it
returns), PostgreSQL by URL (``postgresql+psycopg://...``); one schema for both, created and
upgraded by the server itself (``thaw_schema_version`` holds the version; ``MIGRATIONS`` the
steps). Every write is one transaction, so a request that fails leaves nothing behind, and the
service acknowledges a write only after its commit. Events are idempotent on ``event_id``:
the unique index makes a retried batch land once, however many workers race.

Ids are the client's strings (at most ``MAX_ID`` characters). ``rev`` columns count changes:
the service compares them with what it has cached (per user, and for the catalogue), so every
worker process sees every other worker's writes without talking to it.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TextClause,
    bindparam,
    create_engine,
    event,
    func,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from thaw.errors import ThawError

SCHEMA_VERSION = 2
MAX_ID = 128
CHUNK = 500  # rows per IN (...) list and per multi-row insert
KNOWN_IDS = 1_000_000  # item and user ids a process remembers as stored

metadata = MetaData()
schema_version = Table("thaw_schema_version", metadata, Column("version", Integer, nullable=False))
revisions = Table("thaw_revisions", metadata,
                  Column("name", String(32), primary_key=True),
                  Column("value", BigInteger, nullable=False))
users = Table("thaw_users", metadata,
              Column("id", String(MAX_ID), primary_key=True),
              Column("profile", JSON, nullable=False),
              Column("rev", BigInteger, nullable=False),
              Column("updated_at", Float, nullable=False))
items = Table("thaw_items", metadata,
              Column("id", String(MAX_ID), primary_key=True),
              Column("features", JSON, nullable=False),
              Column("text", Text, nullable=False),
              Column("rev", BigInteger, nullable=False),
              Column("updated_at", Float, nullable=False),
              Index("thaw_items_rev", "rev"))
# seq: the order events were stored in (SQLite's rowid; PostgreSQL's bigserial).
_SEQ = BigInteger().with_variant(Integer, "sqlite")
events = Table("thaw_events", metadata,
               Column("seq", _SEQ, primary_key=True, autoincrement=True),
               Column("event_id", String(MAX_ID), nullable=False, unique=True),
               Column("user_id", String(MAX_ID), nullable=False),
               Column("item_id", String(MAX_ID), nullable=False),
               Column("rating", Float, nullable=True),
               Column("kind", String(32), nullable=False),
               Column("ts", BigInteger, nullable=False),
               Column("stored_at", Float, nullable=False),
               Index("thaw_events_user", "user_id", "seq"))

# Exploration: each explored slot of a served slate, with the candidates the policy chose
# among and the probability it gave the item shown; and the rewards clients report for them.
exposures = Table("thaw_exposures", metadata,
                  Column("slate_id", String(64), primary_key=True),
                  Column("slot", Integer, primary_key=True),
                  Column("user_id", String(MAX_ID), nullable=False),
                  Column("item_id", String(MAX_ID), nullable=False),
                  Column("propensity", Float, nullable=False),
                  Column("candidates", JSON, nullable=False),
                  Column("policy", String(32), nullable=False),
                  Column("created_at", Float, nullable=False))
feedback = Table("thaw_feedback", metadata,
                 Column("seq", _SEQ, primary_key=True, autoincrement=True),
                 Column("slate_id", String(64), nullable=False),
                 Column("item_id", String(MAX_ID), nullable=False),
                 Column("reward", Float, nullable=False),
                 Column("stored_at", Float, nullable=False),
                 Index("thaw_feedback_once", "slate_id", "item_id", unique=True))

# Schema 2: what replicas share besides users, items and events. The exploration evidence per
# (segment, item) arm, summed over every replica's feedback; and the models served, one row
# per publication (the newest is the one every replica serves).
evidence = Table("thaw_evidence", metadata,
                 Column("segment", String(256), primary_key=True),
                 Column("item_id", String(MAX_ID), primary_key=True),
                 Column("trials", Float, nullable=False),
                 Column("successes", Float, nullable=False),
                 Column("rev", BigInteger, nullable=False),
                 Index("thaw_evidence_rev", "rev"))
models = Table("thaw_models", metadata,
               Column("rev", BigInteger, primary_key=True, autoincrement=False),
               Column("model_dir", Text, nullable=False),
               Column("version", String(256), nullable=False),
               Column("published_at", Float, nullable=False))
# thaw_revisions rows: each counts the changes of one shared thing, so a replica compares them
# with what it last took in.
REVISIONS = ("catalogue", "evidence", "model")

# The reads on every recommendation, built once (SQLAlchemy caches their compiled SQL).
_USER = select(users).where(users.c.id == bindparam("user"))
_HISTORY = select(events).where(events.c.user_id == bindparam("user")).order_by(events.c.ts, events.c.seq)
_CATALOGUE_REV = select(revisions.c.value).where(revisions.c.name == "catalogue")
_REVISIONS = select(revisions.c.name, revisions.c.value)


def _evidence_from_feedback(conn: Connection) -> None:
    """Schema 1 to 2: the evidence table summed from the rewards stored so far (the segment
    of each reward's user, as the service counts it)."""
    from thaw.data.features import segment_key

    shown = feedback.join(exposures, (exposures.c.slate_id == feedback.c.slate_id)
                          & (exposures.c.item_id == feedback.c.item_id))
    profiles = shown.outerjoin(users, users.c.id == exposures.c.user_id)
    totals: dict[tuple[str, str], list[float]] = {}
    for row in conn.execute(select(feedback.c.item_id, feedback.c.reward, users.c.profile).select_from(profiles)):
        arm = totals.setdefault((segment_text(segment_key(row.profile or {})), row.item_id), [0.0, 0.0])
        arm[0] += 1.0
        arm[1] += min(max(float(row.reward), 0.0), 1.0)
    if totals:
        conn.execute(evidence.insert(), [{"segment": seg, "item_id": item, "trials": t, "successes": w, "rev": 1}
                                         for (seg, item), (t, w) in totals.items()])
        conn.execute(update(revisions).where(revisions.c.name == "evidence").values(value=1))


# version -> the step that upgrades a store from it to version + 1 (the tables a version adds
# are created before the steps run).
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _evidence_from_feedback}


def segment_text(key: Hashable) -> str:
    """An exploration segment (a tuple such as ("F", 25), or None) as stored."""
    return json.dumps(None if key is None else list(key))


def segment_of(text: str) -> Hashable:
    """The segment key ``segment_text`` stored."""
    value = json.loads(text)
    return None if value is None else tuple(value)


class UnknownItems(ThawError):
    """Events name items the store does not have (and the request did not allow creating them)."""

    def __init__(self, unknown: Sequence[str]) -> None:
        self.unknown = list(unknown)
        super().__init__(f"unknown item(s): {', '.join(self.unknown[:10])}"
                         + (f" and {len(self.unknown) - 10} more" if len(self.unknown) > 10 else "")
                         + "; PUT /v1/items/{item} first, or post with create_items=true")


@dataclass
class EventsWritten:
    """What one batch did: stored event ids (new), duplicates (already stored), created rows."""

    stored: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    created_users: list[str] = field(default_factory=list)
    created_items: list[str] = field(default_factory=list)


class Store:
    """Users, items and events behind one SQLAlchemy URL (``sqlite:///path`` or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        # Items and users this process has seen stored: rows are never deleted, so a batch
        # asks the database only about the others.
        self.known_items: set[str] = set()
        self.known_users: set[str] = set()
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        if self.dialect == "sqlite":
            if url in ("sqlite://", "sqlite:///:memory:"):
                raise ThawError("an in-memory SQLite store would lose every event; give a file "
                                "(sqlite:///path/to/thaw.db)")
            folder = Path(make_url(url).database or "").parent
            if not folder.is_dir():
                raise ThawError(f"store {url}: the folder {folder} does not exist; make it first, or "
                                "give a file in an existing folder")
            # Two engines: writes take the write lock when they begin (BEGIN IMMEDIATE), so two
            # writers never deadlock upgrading a read lock; reads begin deferred and never wait.
            self.writer = _sqlite_engine(url, "BEGIN IMMEDIATE")
            self.reader = _sqlite_engine(url, "BEGIN")
            self._insert = sqlite.insert
        elif self.dialect == "postgresql":
            self.writer = self.reader = create_engine(url, pool_pre_ping=True, pool_size=8)
            self._insert = postgresql.insert
        else:
            raise ThawError(f"unsupported store URL '{url}': use sqlite:///FILE or "
                            "postgresql+psycopg://USER@HOST:PORT/DB")

    # --- schema -----------------------------------------------------------------------------

    def init(self) -> int:
        """Create the schema, or upgrade it to ``SCHEMA_VERSION``; returns the version found
        (0 for a new store). A store from a newer thaw is refused, never touched."""
        with self.writer.begin() as conn:
            if self.dialect == "postgresql":  # one creator at a time when workers start together
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7231)")
            metadata.create_all(conn, checkfirst=True)
            for name in REVISIONS:
                conn.execute(self._insert(revisions).values(name=name, value=0).on_conflict_do_nothing())
            found = conn.execute(select(schema_version.c.version)).scalar()
            if found is None:
                conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
                return 0
            if found > SCHEMA_VERSION:
                raise ThawError(f"the store at {self.safe_url} has schema version {found}; this thaw "
                                f"knows up to {SCHEMA_VERSION}: upgrade thaw")
            for version in range(found, SCHEMA_VERSION):
                MIGRATIONS[version](conn)
            conn.execute(update(schema_version).values(version=SCHEMA_VERSION))
            return found

    def version(self) -> int | None:
        with self.reader.connect() as conn:
            return conn.execute(select(schema_version.c.version)).scalar()

    @property
    def safe_url(self) -> str:
        """The URL without a password, for messages."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    def ping(self) -> bool:
        try:
            with self.reader.connect() as conn:
                return conn.execute(select(schema_version.c.version)).scalar() == SCHEMA_VERSION
        except Exception:  # noqa: BLE001 - any failure means: not ready
            return False

    def close(self) -> None:
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()

    # --- writes -----------------------------------------------------------------------------

    def put_item(self, item: str, features: Mapping[str, Any], text: str) -> bool:
        """Create or update an item; True when it is new. Moves the catalogue revision on."""
        with self.writer.begin() as conn:
            rev = self._bump_catalogue(conn)
            created = conn.execute(select(items.c.id).where(items.c.id == item)).first() is None
            row = {"id": item, "features": dict(features), "text": text, "rev": rev, "updated_at": time.time()}
            stmt = self._insert(items).values(**row)
            conn.execute(stmt.on_conflict_do_update(index_elements=[items.c.id],
                                                    set_={k: v for k, v in row.items() if k != "id"}))
            return created

    def put_user(self, user: str, profile: Mapping[str, Any]) -> bool:
        """Create or replace a user's profile; True when the user is new."""
        with self.writer.begin() as conn:
            created = conn.execute(select(users.c.id).where(users.c.id == user)).first() is None
            stmt = self._insert(users).values(id=user, profile=dict(profile), rev=0, updated_at=time.time())
            conn.execute(stmt.on_conflict_do_update(
                index_elements=[users.c.id],
                set_={"profile": dict(profile), "rev": users.c.rev + 1, "updated_at": time.time()}))
            return created

    def seed(self, user_rows: Iterable[tuple[str, Mapping[str, Any]]],
             item_rows: Iterable[tuple[str, Mapping[str, Any], str]]) -> tuple[int, int]:
        """Insert the users and items that are missing (a model's bundled data), leaving every
        stored one as it is; returns how many of each were added."""
        now = time.time()
        added = [0, 0]
        with self.writer.begin() as conn:
            for k, (table, rows) in enumerate((
                    (users, [{"id": u, "profile": dict(p), "rev": 0, "updated_at": now} for u, p in user_rows]),
                    (items, [{"id": i, "features": dict(f), "text": t, "rev": 0, "updated_at": now}
                             for i, f, t in item_rows]))):
                for chunk in _chunks(rows):
                    known = set(conn.execute(select(table.c.id).where(table.c.id.in_([r["id"] for r in chunk])))
                                .scalars())
                    new = [r for r in chunk if r["id"] not in known]
                    if new:
                        conn.execute(self._insert(table).on_conflict_do_nothing(), new)
                        added[k] += len(new)
        return added[0], added[1]

    def add_events(self, batch: Sequence[Mapping[str, Any]], create_items: bool = False) -> EventsWritten:
        """Store a batch of events in one transaction, each ``event_id`` once.

        Users never seen are created as cold users (empty profile). Items never seen are an
        ``UnknownItems`` error, and then nothing of the batch is stored, unless
        ``create_items`` (they are created without features). Returns only after the commit.

        Four statements and one commit per batch, whatever its size: the items it names (the
        one read), the new users and then the events each as one multi-row ``INSERT ... ON
        CONFLICT DO NOTHING RETURNING``; what the unique index turned away is a duplicate,
        whichever worker stored it first, so no event_id is checked before it is written.
        """
        out = EventsWritten()
        now = time.time()
        first: dict[str, Mapping[str, Any]] = {}
        for e in batch:
            if e["event_id"] in first:
                out.duplicates.append(e["event_id"])
            else:
                first[e["event_id"]] = e
        item_ids = list(dict.fromkeys(e["item"] for e in first.values()))
        user_ids = list(dict.fromkeys(e["user"] for e in first.values()))
        with self.writer.begin() as conn:
            unsure = [i for i in item_ids if i not in self.known_items]
            self._remember(self.known_items, self._existing(conn, items.c.id, unsure))
            missing = [i for i in unsure if i not in self.known_items]
            if missing and not create_items:
                raise UnknownItems(missing)
            if missing:
                rev = self._bump_catalogue(conn)
                conn.execute(self._insert(items).on_conflict_do_nothing(),
                             [{"id": i, "features": {}, "text": "", "rev": rev, "updated_at": now} for i in missing])
                out.created_items = missing
            created = self._insert_new(conn, users, users.c.id, [
                {"id": u, "profile": {}, "rev": 0, "updated_at": now} for u in user_ids if u not in self.known_users])
            out.created_users = [u for u in user_ids if u in created]
            stored = self._insert_new(conn, events, events.c.event_id, [
                {"event_id": e["event_id"], "user_id": e["user"], "item_id": e["item"], "rating": e.get("rating"),
                 "kind": e["kind"], "ts": int(e["ts"]), "stored_at": now} for e in first.values()])
            out.stored = [i for i in first if i in stored]
            out.duplicates += [i for i in first if i not in stored]
        self._remember(self.known_items, item_ids)  # committed: every one of them exists now
        self._remember(self.known_users, user_ids)
        return out

    @staticmethod
    def _remember(known: set[str], ids: Iterable[str]) -> None:
        """Add ids known to be stored (never deleted, so never stale); bounded by forgetting."""
        if len(known) > KNOWN_IDS:
            known.clear()
        known.update(ids)

    def _insert_new(self, conn: Connection, table: Table, key: Column, rows: list[dict[str, Any]]) -> set[str]:
        """Insert ``rows`` whose ``key`` is not taken yet, in one statement; returns the keys
        inserted. PostgreSQL: ``INSERT ... SELECT FROM unnest(arrays)``, one short statement
        whatever the batch size (a multi-row VALUES is re-parsed by psycopg for every batch,
        10 ms for 100 events here, and ``values(rows)`` re-compiled by SQLAlchemy, 30 ms).
        SQLite: a list of rows with RETURNING, which SQLAlchemy sends as multi-row INSERTs
        from a statement compiled once ("insertmanyvalues")."""
        if not rows:
            return set()
        if self.dialect == "postgresql":
            arrays = {c: [json.dumps(r[c]) if isinstance(table.c[c].type, JSON) else r[c] for r in rows]
                      for c in rows[0]}
            return set(conn.execute(_unnest_insert(table, key, tuple(rows[0])), arrays).scalars())
        stmt = self._insert(table).on_conflict_do_nothing(index_elements=[key]).returning(key)
        return set(conn.execute(stmt, rows).scalars())

    def add_exposures(self, slate_id: str, user: str, policy: str,
                      slots: Sequence[tuple[str, float, Sequence[str]]]) -> None:
        """Log the explored slots of one served slate: (item, propensity, candidates) each."""
        now = time.time()
        with self.writer.begin() as conn:
            conn.execute(exposures.insert(), [
                {"slate_id": slate_id, "slot": k, "user_id": user, "item_id": item, "propensity": float(p),
                 "candidates": list(cands), "policy": policy, "created_at": now}
                for k, (item, p, cands) in enumerate(slots)])

    def add_feedback(self, slate_id: str, item: str, reward: float,
                     segment: Callable[[Mapping[str, Any]], Hashable] = lambda _profile: None
                     ) -> dict[str, Any] | None:
        """Record the reward of an item shown in an explored slot, once per (slate, item), and
        add it to the evidence of its arm (``segment`` of the user's profile, the item) in the
        same transaction. Returns the exposure when the reward is new, None when it was
        already recorded; a KeyError when the item was not shown in an explored slot of that
        slate."""
        with self.writer.begin() as conn:
            shown = conn.execute(select(exposures).where(exposures.c.slate_id == slate_id,
                                                         exposures.c.item_id == item)).mappings().first()
            if shown is None:
                raise KeyError(slate_id)
            result = conn.execute(self._insert(feedback).values(
                slate_id=slate_id, item_id=item, reward=float(reward), stored_at=time.time())
                .on_conflict_do_nothing(index_elements=[feedback.c.slate_id, feedback.c.item_id]))
            if not result.rowcount:
                return None
            profile = conn.execute(select(users.c.profile).where(users.c.id == shown["user_id"])).scalar()
            rev, won = self._bump(conn, "evidence"), min(max(float(reward), 0.0), 1.0)
            arm = {"segment": segment_text(segment(profile or {})), "item_id": item}
            conn.execute(self._insert(evidence).values(**arm, trials=1.0, successes=won, rev=rev)
                         .on_conflict_do_update(index_elements=[evidence.c.segment, evidence.c.item_id], set_={
                             "trials": evidence.c.trials + 1.0, "successes": evidence.c.successes + won, "rev": rev}))
            return dict(shown)

    def evidence_since(self, rev: int) -> list[dict[str, Any]]:
        """Exploration arms whose evidence changed after evidence revision ``rev`` (0: all)."""
        with self.reader.connect() as conn:
            rows = conn.execute(select(evidence).where(evidence.c.rev > rev).order_by(evidence.c.rev))
            return [dict(r) for r in rows.mappings()]

    def publish_model(self, model_dir: str, version: str) -> int:
        """Make ``model_dir`` (``version``) the model every replica serves; returns its
        model revision."""
        with self.writer.begin() as conn:
            rev = self._bump(conn, "model")
            conn.execute(models.insert().values(rev=rev, model_dir=model_dir, version=version,
                                                published_at=time.time()))
            return rev

    def published_model(self) -> dict[str, Any] | None:
        """The newest published model (rev, model_dir, version), or None."""
        with self.reader.connect() as conn:
            row = conn.execute(select(models).order_by(models.c.rev.desc()).limit(1)).mappings().first()
        return None if row is None else dict(row)

    def bandit_log(self) -> list[dict[str, Any]]:
        """Every explored slot with its reward (0 when the client reported none), in the
        order served: the rows ``thaw bandit-replay`` reads."""
        joined = exposures.outerjoin(feedback, (feedback.c.slate_id == exposures.c.slate_id)
                                     & (feedback.c.item_id == exposures.c.item_id))
        stmt = (select(exposures, feedback.c.reward).select_from(joined)
                .order_by(exposures.c.created_at, exposures.c.slate_id, exposures.c.slot))
        with self.reader.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def all_feedback(self) -> list[dict[str, Any]]:
        """Every reward in the order stored, with the user its slate was shown to."""
        shown = feedback.join(exposures, (exposures.c.slate_id == feedback.c.slate_id)
                              & (exposures.c.item_id == feedback.c.item_id))
        query = select(feedback, exposures.c.user_id).select_from(shown).order_by(feedback.c.seq)
        with self.reader.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def _bump_catalogue(self, conn: Connection) -> int:
        return self._bump(conn, "catalogue")

    @staticmethod
    def _bump(conn: Connection, name: str) -> int:
        """Move revision ``name`` on by one; the row stays locked until the commit, so
        revisions commit in the order they were taken."""
        conn.execute(update(revisions).where(revisions.c.name == name).values(value=revisions.c.value + 1))
        return int(conn.execute(select(revisions.c.value).where(revisions.c.name == name)).scalar_one())

    @staticmethod
    def _existing(conn: Connection, column: Column, values: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(list(values)):
            found.update(conn.execute(select(column).where(column.in_(chunk))).scalars())
        return found

    # --- reads ------------------------------------------------------------------------------

    def user(self, user: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            row = conn.execute(select(users).where(users.c.id == user)).mappings().first()
        return None if row is None else dict(row)

    def item(self, item: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            row = conn.execute(select(items).where(items.c.id == item)).mappings().first()
        return None if row is None else dict(row)

    def snapshot(self, user: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, int]]:
        """One consistent read of a user's row, every event of theirs (in the order they
        happened: ts, then the order stored) and the revisions (catalogue, evidence, model)."""
        with self.reader.begin() as conn:
            row = conn.execute(_USER, {"user": user}).mappings().first()
            history = conn.execute(_HISTORY, {"user": user}).mappings().all()
            revs = {name: int(value) for name, value in conn.execute(_REVISIONS)}
        return (None if row is None else dict(row)), [dict(r) for r in history], revs

    def history(self, user: str) -> list[dict[str, Any]]:
        return self.snapshot(user)[1]

    def catalogue_rev(self) -> int:
        with self.reader.connect() as conn:
            return int(conn.execute(_CATALOGUE_REV).scalar_one())

    def items_changed_since(self, rev: int) -> list[dict[str, Any]]:
        """Items created or updated after catalogue revision ``rev``, oldest change first."""
        with self.reader.connect() as conn:
            rows = conn.execute(select(items).where(items.c.rev > rev).order_by(items.c.rev, items.c.id))
            return [dict(r) for r in rows.mappings()]

    def count_events(self) -> int:
        with self.reader.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)).scalar_one())

    def all_events(self) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            return [dict(r) for r in conn.execute(select(events).order_by(events.c.seq)).mappings()]


@functools.lru_cache(maxsize=16)
def _unnest_insert(table: Table, key: Column, names: tuple[str, ...]) -> TextClause:
    """PostgreSQL: insert one row per element of the parameter arrays named ``names``, those
    whose ``key`` is taken left out, returning the keys inserted."""
    arrays = ", ".join(f"CAST(:{n} AS {_pg_type(table.c[n])}[])" for n in names)
    casts = ", ".join(f"CAST(v.{n} AS json)" if isinstance(table.c[n].type, JSON) else f"v.{n}" for n in names)
    return text(f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {casts} FROM unnest({arrays}) "
                f"AS v({', '.join(names)}) ON CONFLICT ({key.name}) DO NOTHING RETURNING {key.name}")


def _pg_type(column: Column) -> str:
    """The array element type a column's values travel as (JSON as its text)."""
    if isinstance(column.type, JSON):
        return "text"
    return column.type.compile(dialect=postgresql.dialect())


def _sqlite_engine(url: str, begin: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN below, not the driver's
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


def _chunks(rows: list, size: int = CHUNK) -> Iterable[list]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]
