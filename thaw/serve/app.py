"""The HTTP API (FastAPI): versioned under /v1, JSON, ids as the client names them.

Endpoints are plain functions (FastAPI runs them in its thread pool): the store's calls block,
and the model's work holds the service's lock either way. Every write is acknowledged only
after its commit. ``from_env`` is the factory each uvicorn worker calls.
"""

from __future__ import annotations

import csv
import io
import math
import os
import signal
import threading
import time
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from thaw.errors import ThawError
from thaw.serve.auth import Auth, load_tokens
from thaw.serve.metrics import Metrics
from thaw.serve.service import InvalidValue, Live, Served, Service, SourceUnsupported
from thaw.serve.store import MAX_ID, Store, UnknownItems, segment_of

ID_PATTERN = r"^[A-Za-z0-9_.:@-]+$"
MAX_BATCH = 1000
MAX_BODY = 2 * 1024 * 1024
MAX_N = 1000
MAX_FIELDS = 64

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)]
Finite = Annotated[float, Field(allow_inf_nan=False)]  # NaN and inf are refused, with a 422
Scalar = Annotated[str, StringConstraints(max_length=1000)] | int | Finite | bool | None
Feature = Scalar | list[Annotated[str, StringConstraints(max_length=200)]]


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    features: dict[Annotated[str, StringConstraints(max_length=64)], Feature] = Field(
        default_factory=dict, max_length=MAX_FIELDS,
        description="title, genres (a list), year, and any other feature")
    text: str = Field("", max_length=20_000, description="free text, embedded with the title by content")


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: dict[Annotated[str, StringConstraints(max_length=64)], Scalar] = Field(
        default_factory=dict, max_length=MAX_FIELDS, description="gender, age, occupation, zip_code, ...")


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: Id = Field(description="the client's id of this event: a retried one is stored once")
    user: Id
    item: Id
    rating: float | None = Field(None, allow_inf_nan=False)
    kind: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = "interaction"
    ts: int | None = Field(None, ge=0, le=2**53, description="seconds since the epoch (default: now)")


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1, description=f"at most {MAX_BATCH} per request")


class EventsOut(BaseModel):
    stored: int
    duplicates: list[str]
    created_users: list[str]
    created_items: list[str]


class Route(BaseModel):
    band: str | None = Field(description="the stack's support-size band the request fell in")
    kind: str = Field(description="member, blend, fallback (the breaker tripped) or model (not a stack)")
    members: list[str]
    weights: list[float]
    breaker_tripped: bool


class Scored(BaseModel):
    item: str
    score: float
    propensity: float | None = Field(None, description="set on explored slots: P(this item | the slots before)")


class RecommendationsOut(BaseModel):
    user: str | None
    items: list[Scored]
    route: Route
    k: int = Field(description="interactions of the user's history the model scored from")
    model_version: str
    cached: bool
    slate_id: str | None = Field(None, description="with explore=true: the id to send feedback with")


class HistoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: Id
    rating: float | None = Field(None, allow_inf_nan=False)
    ts: int | None = Field(None, ge=0, le=2**53)


class AnonymousIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: dict[Annotated[str, StringConstraints(max_length=64)], Scalar] = Field(
        default_factory=dict, max_length=MAX_FIELDS)
    history: list[HistoryIn] = Field(default_factory=list, max_length=MAX_BATCH)
    source: list[HistoryIn] = Field(default_factory=list, max_length=MAX_BATCH, description=(
        "history in the source domain of a model fitted on a cross-domain pair (cross-domain "
        "transfer), items named as that domain names them"))
    n: int = Field(10, ge=1, le=MAX_N)
    exclude_seen: bool = True


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slate_id: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]
    item: Id
    reward: float = Field(ge=0.0, le=1.0, description="1 = clicked (or liked), 0 = ignored; in between allowed")


class FeedbackOut(BaseModel):
    recorded: bool = Field(description="false when this slate's item already had its reward")


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_dir: str | None = Field(None, max_length=4096,
                                  description="a folder written by `thaw fit` (default: the current one)")


class Reloaded(BaseModel):
    previous: str
    model_version: str
    model_dir: str


class StoredEvent(BaseModel):
    event_id: str
    item: str
    rating: float | None
    kind: str
    ts: int
    stored_at: float


class HistoryOut(BaseModel):
    user: str
    profile: dict[str, Any]
    events: list[StoredEvent]


class Arm(BaseModel):
    segment: list[Any] | None = Field(description="the users' segment (gender, age band); null: unknown")
    item: str
    trials: float = Field(description="rewards reported for the item explored to this segment")
    successes: float = Field(description="their sum (a reward is 0 to 1)")


class EvidenceOut(BaseModel):
    arms: list[Arm]
    trials: float
    successes: float


class Written(BaseModel):
    id: str
    created: bool


class BodyLimit:
    """413 for a request body over ``limit`` bytes, declared or streamed (pure ASGI, outermost)."""

    class TooLarge(Exception):
        pass

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._reject(send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyLimit.TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except BodyLimit.TooLarge:
            await self._reject(send)

    async def _reject(self, send: Any) -> None:
        await JSONResponse({"detail": f"request body over {self.limit} bytes"}, status_code=413)(
            {"type": "http"}, None, send)


class Timing:
    """Request counts and latency per route template (pure ASGI: no per-request task)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = [500]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.count("thaw_requests_total", route=path, method=scope["method"], status=status[0])
            self.metrics.observe("thaw_request_seconds", time.perf_counter() - started, route=path,
                                 method=scope["method"])


def _recommendations(user: str | None, served: Served, version: str) -> RecommendationsOut:
    explored = served.explored or {}
    return RecommendationsOut(
        user=user, items=[Scored(item=i, score=s, propensity=explored.get(i)) for i, s in served.items],
        route=Route(**served.answer.route), k=served.answer.k, model_version=version, cached=served.cached,
        slate_id=served.slate_id)


class CSVResponse(PlainTextResponse):
    """Text as CSV, which is also what the OpenAPI document says it is."""

    media_type = "text/csv"


def create_app(service: Service | Live, auth: Auth | None = None, results: str | None = None) -> FastAPI:
    """The API over one service (a loaded model and its store), with bearer tokens when
    ``auth`` has any. Each request takes the service that is current when it starts, so a
    reload never drops one in flight. The pages (thaw.serve.page) come with it: "be a new
    user" at /, and the report of the ``results`` folder at /report."""
    auth = auth or Auth({})
    live = service if isinstance(service, Live) else Live(service)
    metrics = live.current.metrics
    read, write, admin = ([Depends(auth.need(s))] for s in ("read", "write", "admin"))
    app = FastAPI(title="thaw", version="1", description="Cold-start recommendations from the thaw stack: "
                  "events in, recommendations out, every user adapted from their history on the request.")
    app.state.live = live

    @app.exception_handler(UnknownItems)
    def _unknown(_request: Request, exc: UnknownItems) -> JSONResponse:
        return JSONResponse({"detail": [{"loc": ["body", "events", "item"], "msg": str(exc),
                                         "type": "unknown_item", "items": exc.unknown[:100]}]},
                            status_code=422)

    @app.exception_handler(InvalidValue)
    def _invalid_value(_request: Request, exc: InvalidValue) -> JSONResponse:
        return JSONResponse({"detail": [{"loc": exc.loc, "msg": str(exc), "type": "value_error"}]},
                            status_code=422)

    @app.exception_handler(RequestValidationError)
    def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422, except that a NaN or infinity the client sent (which JSON cannot
        # carry back) is echoed as text instead of failing to render as a 500.
        return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """The model is loaded and the store answers."""
        svc = live.current
        ready = svc.store.ping()
        return JSONResponse({"status": "ready" if ready else "store unreachable", "model_version": svc.version},
                            status_code=200 if ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        """Prometheus text: request counts and latency per route, events stored, breaker trips."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.put("/v1/items/{item}", response_model=Written, dependencies=write)
    def put_item(item: Annotated[Id, Path()], body: ItemIn) -> Written:
        """Create or update an item; a new one is recommendable at once through content."""
        return Written(id=item, created=live.current.put_item(item, body.features, body.text))

    @app.put("/v1/users/{user}", response_model=Written, dependencies=write)
    def put_user(user: Annotated[Id, Path()], body: UserIn) -> Written:
        """Create or replace a user's profile."""
        return Written(id=user, created=live.current.put_user(user, body.profile))

    @app.post("/v1/events", response_model=EventsOut, dependencies=write)
    def post_events(body: EventsIn, create_items: bool = False) -> EventsOut:
        """Store a batch of events, each event_id once; answered after the commit. Unknown
        users are created as cold users; unknown items are a 422 unless create_items=true,
        and then nothing of the batch is stored."""
        if len(body.events) > MAX_BATCH:
            raise HTTPException(413, f"at most {MAX_BATCH} events per request, got {len(body.events)}")
        now = int(time.time())
        batch = [{**e.model_dump(), "ts": now if e.ts is None else e.ts} for e in body.events]
        w = live.current.add_events(batch, create_items=create_items)
        return EventsOut(stored=len(w.stored), duplicates=w.duplicates, created_users=w.created_users,
                         created_items=w.created_items)

    @app.get("/v1/users/{user}/recommendations", response_model=RecommendationsOut, dependencies=read)
    def user_recommendations(user: Annotated[Id, Path()], n: Annotated[int, Query(ge=1, le=MAX_N)] = 10,
                             exclude_seen: bool = True, explore: bool = False) -> RecommendationsOut:
        """The user's top n, adapted to their stored history on this request (cached until
        their next event). A user nobody has seen gets the K = 0 answer. With explore=true a
        bandit policy fills the first two slots from the stack's top 20, and the slate is
        logged with its propensities (send the outcome to POST /v1/feedback)."""
        svc = live.current
        return _recommendations(user, svc.recommend(user, n, exclude_seen, explore), svc.version)

    @app.post("/v1/recommendations", response_model=RecommendationsOut, dependencies=read)
    def anonymous_recommendations(body: Annotated[AnonymousIn, Body()]) -> RecommendationsOut:
        """Recommendations for a profile and history given inline; nothing is stored."""
        svc = live.current
        try:
            served = svc.recommend_anonymous(body.profile, [h.model_dump() for h in body.history], body.n,
                                             body.exclude_seen, [h.model_dump() for h in body.source])
        except SourceUnsupported as exc:
            raise HTTPException(422, [{"loc": ["body", "source"], "msg": str(exc),
                                       "type": "value_error"}]) from None
        return _recommendations(None, served, svc.version)

    @app.post("/v1/admin/reload", response_model=Reloaded, dependencies=admin)
    def reload(body: ReloadIn) -> Reloaded:
        """Load a model folder (default: the one being served, e.g. after a re-fit) and serve
        it from the next request on; requests in flight finish on the old one."""
        before = live.current.version
        try:
            svc = live.reload(body.model_dir)
        except ThawError as exc:  # shaped like every other 422, as the OpenAPI document says
            raise HTTPException(422, [{"loc": ["body", "model_dir"], "msg": str(exc),
                                       "type": "value_error"}]) from None
        return Reloaded(previous=before, model_version=svc.version, model_dir=str(svc.model_dir))

    @app.post("/v1/feedback", response_model=FeedbackOut, dependencies=write)
    def post_feedback(body: FeedbackIn) -> FeedbackOut:
        """The outcome of an explored slot: the policy learns it, and the log keeps it."""
        try:
            return FeedbackOut(recorded=live.current.feedback(body.slate_id, body.item, body.reward))
        except KeyError:
            raise HTTPException(404, f"item '{body.item}' was not shown in an explored slot of slate "
                                     f"'{body.slate_id}'") from None

    @app.get("/v1/exploration/log.csv", response_class=CSVResponse, dependencies=read)
    def exploration_log() -> CSVResponse:
        """Every explored slot (item, reward, user, propensity, candidates), the CSV that
        `thaw bandit-replay --log` reads; a slot without feedback has reward 0."""
        return CSVResponse(bandit_log_csv(live.current.store))

    @app.get("/v1/exploration/evidence", response_model=EvidenceOut, dependencies=read)
    def exploration_evidence() -> EvidenceOut:
        """The exploration policy's evidence per arm (segment, item): rewards summed over
        every replica that serves this store, which is what each replica's policy decides by."""
        arms = [Arm(segment=segment_of(r["segment"]), item=r["item_id"], trials=r["trials"], successes=r["successes"])
                for r in live.current.store.evidence_since(0)]
        return EvidenceOut(arms=arms, trials=sum(a.trials for a in arms), successes=sum(a.successes for a in arms))

    @app.get("/v1/users/{user}/history", response_model=HistoryOut, dependencies=read)
    def user_history(user: Annotated[Id, Path()]) -> HistoryOut:
        """Every stored event of the user, in the order they happened."""
        row, events, _ = live.current.store.snapshot(user)
        if row is None:
            raise HTTPException(404, f"no user '{user}'")
        return HistoryOut(user=user, profile=row["profile"], events=[
            StoredEvent(event_id=e["event_id"], item=e["item_id"], rating=e["rating"], kind=e["kind"],
                        ts=e["ts"], stored_at=e["stored_at"]) for e in events])

    from thaw.serve.page import add_pages

    add_pages(app, live, read, results)
    wrapped: Any = Timing(app, metrics)
    return BodyLimit(wrapped, MAX_BODY)  # type: ignore[return-value]


def _finite(value: Any) -> Any:
    """``value`` (JSON-like) with every NaN or infinity as its text ("nan", "inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def bandit_log_csv(store: Store) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["item", "reward", "user", "propensity", "candidates", "slate_id", "slot", "policy"])
    for r in store.bandit_log():
        writer.writerow([r["item_id"], 0.0 if r["reward"] is None else r["reward"], r["user_id"],
                         repr(r["propensity"]), " ".join(r["candidates"]), r["slate_id"], r["slot"], r["policy"]])
    return buffer.getvalue()


def from_env() -> Any:
    """The app for one uvicorn worker: the model folder and store URL from THAW_SERVE_MODEL and
    THAW_SERVE_DB (set by ``thaw serve``), tokens from THAW_API_TOKENS and the file named by
    THAW_SERVE_TOKENS_FILE, the folder the workers' metrics are summed in from
    THAW_SERVE_METRICS_DIR, the schema created or checked first."""
    store = Store(os.environ["THAW_SERVE_DB"])
    store.init()
    live = Live(Service(os.environ["THAW_SERVE_MODEL"], store,
                        cache_size=int(os.environ.get("THAW_SERVE_CACHE", "4096")),
                        metrics=Metrics(os.environ.get("THAW_SERVE_METRICS_DIR") or None)))
    live.current.restore_policy()
    live.adopt()  # the model the replicas serve now, which a reload may have changed since the start
    if hasattr(signal, "SIGHUP"):  # SIGHUP: reload the model folder, off the signal handler's thread
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=live.reload, daemon=True).start())
    return create_app(live, Auth(load_tokens(os.environ.get("THAW_SERVE_TOKENS_FILE") or None)),
                      results=os.environ.get("THAW_SERVE_RESULTS") or None)
