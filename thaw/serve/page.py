"""The service's pages: "be a new user" at ``/`` and the evaluation's report at ``/report``.

The page is static (``thaw/serve/static``) and talks to the service only through the public
API, so it is also that API's living example. Two read endpoints are added here for it and
for any client: ``GET /v1/items`` (search the catalogue by title, or name items by id) and
``GET /v1/users/{user}/rank`` (where one item ranks for a user now).
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path as FilePath
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Path, Query
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from thaw.serve.service import Live, Service

STATIC = FilePath(__file__).with_name("static")
ASSETS = {"page.js": "text/javascript", "page.css": "text/css"}
MAX_ITEMS = 100
REPORT_FILES = {"report.html": "text/html; charset=utf-8", "cold_to_warm.png": "image/png"}
PROFILE_CHOICES = 8


class ItemOut(BaseModel):
    item: str
    title: str | None
    genres: list[str]
    year: float | int | str | None = None
    interactions: int = Field(description="training interactions of the item (0 for an item added later)")


class ItemsOut(BaseModel):
    items: list[ItemOut]
    total: int = Field(description="items that matched, of which the first n are listed")


class RankOut(BaseModel):
    user: str
    item: str
    rank: int | None = Field(description="1 = the user's first recommendation; null when the user has seen it")
    of: int = Field(description="items the user could be recommended (the catalogue less what they have seen)")
    score: float | None
    seen: bool
    k: int


class Catalogue:
    """Titles, genres and training popularity of every item, rebuilt when the store's catalogue
    revision moves (an item added or changed through the API)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: tuple[int, int] | None = None
        self.rows: list[dict[str, Any]] = []
        self.by_id: dict[str, dict[str, Any]] = {}

    def of(self, svc: Service) -> list[dict[str, Any]]:
        rev = svc.store.catalogue_rev()
        key = (id(svc), rev)
        with self.lock:
            if key != self.key:
                counts = np.bincount(svc.data.interactions.item, minlength=svc.data.n_items)
                model_items = {i: int(counts[k]) for k, i in enumerate(svc.item_ids[:svc.n_model_items])}
                rows = []
                for row in svc.store.items_changed_since(-1):  # seeded items have revision 0
                    features = row.get("features") or {}
                    genres = features.get("genres") or []
                    rows.append({"item": row["id"], "title": _text(features.get("title")),
                                 "genres": [str(g) for g in (genres if isinstance(genres, list) else [genres])],
                                 "year": features.get("year"), "interactions": model_items.get(row["id"], 0)})
                self.rows = sorted(rows, key=lambda r: (-r["interactions"], r["item"]))
                self.by_id = {r["item"]: r for r in self.rows}
                self.key = key
            return self.rows


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def find_report(results: str | FilePath | None, model_dir: FilePath) -> FilePath | None:
    """The folder holding report.html: ``results`` when given, else the model's own folder
    when a report was put beside the model; None when there is none."""
    for folder in ([FilePath(results)] if results else [model_dir]):
        if (folder / "report.html").is_file():
            return folder
    return None


def profile_choices(svc: Service) -> dict[str, list[Any]]:
    """A few values of each profile field of the model's data set, the most common first
    (numbers as their quartiles), for the page's profile picker."""
    features = svc.data.user_features
    out: dict[str, list[Any]] = {}
    for column in features.columns:
        values = features[column].dropna()
        if not len(values):
            continue
        if values.dtype.kind in "iuf" and values.nunique() > PROFILE_CHOICES:
            picks = sorted({float(v) for v in np.quantile(values, [0.1, 0.3, 0.5, 0.7, 0.9]).round()})
            out[str(column)] = [int(v) if v.is_integer() else v for v in picks]
        elif values.dtype.kind in "iufOUSb" or str(values.dtype) in ("category", "string"):
            common = values.astype(str).value_counts().index[:PROFILE_CHOICES]
            if len(common) and values.nunique() <= 200:  # not an id-like field (zip codes)
                out[str(column)] = [_plain(values[values.astype(str) == c].iloc[0]) for c in common]
    return out


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def add_pages(app: FastAPI, live: Live, read: list, results: str | FilePath | None = None) -> None:
    """The page at ``/``, its assets, the catalogue search and rank endpoints (``read`` scope)
    and the report at ``/report`` when a results folder is found."""
    catalogue = Catalogue()
    report = find_report(results, live.current.model_dir)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        svc = live.current
        settings = {"profiles": profile_choices(svc), "rating_scale": list(svc.data.rating_scale),
                    "report": report is not None, "dataset": svc.data.name, "model_version": svc.version}
        text = (STATIC / "page.html").read_text()
        blob = json.dumps(settings).replace("<", "\\u003c")  # never closes the script element
        return HTMLResponse(text.replace("__SETTINGS__", blob),
                            headers={"Cache-Control": "no-store"})

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, "no such file")
        return FileResponse(STATIC / name, media_type=ASSETS[name])

    @app.get("/report", include_in_schema=False)
    def report_redirect() -> Response:  # the report names its PNG relatively: serve it from a folder
        return RedirectResponse("/report/", status_code=307)

    @app.get("/report/", include_in_schema=False)
    def report_page() -> Response:
        return report_file("report.html")

    @app.get("/report/{name}", include_in_schema=False)
    def report_file(name: str) -> Response:
        if report is None:
            raise HTTPException(404, "no results folder: start thaw serve with --results DIR "
                                     "(a folder written by thaw run or thaw evaluate)")
        if name not in REPORT_FILES or not (report / name).is_file():
            raise HTTPException(404, "no such file")
        return FileResponse(report / name, media_type=REPORT_FILES[name])

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/v1/items", response_model=ItemsOut, dependencies=read)
    def items(q: Annotated[str, Query(max_length=200, description="words the title holds (any case)")] = "",
              ids: Annotated[str, Query(max_length=20_000, description="comma-separated item ids")] = "",
              n: Annotated[int, Query(ge=1, le=MAX_ITEMS)] = 20) -> ItemsOut:
        """Search the catalogue: items whose title holds every word of ``q`` (the most
        interacted with first; every item when ``q`` is empty), or the items named in ``ids``
        (unknown ids are left out)."""
        rows = catalogue.of(live.current)
        if ids:
            wanted = [i for i in dict.fromkeys(ids.split(",")) if i]
            found = [catalogue.by_id[i] for i in wanted if i in catalogue.by_id]
            return ItemsOut(items=[ItemOut(**r) for r in found[:MAX_ITEMS]], total=len(found))
        words = [w for w in re.split(r"\s+", q.lower()) if w]
        hits = [r for r in rows if all(w in (r["title"] or r["item"]).lower() for w in words)]
        return ItemsOut(items=[ItemOut(**r) for r in hits[:n]], total=len(hits))

    @app.get("/v1/users/{user}/rank", response_model=RankOut, dependencies=read)
    def rank(user: Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:@-]+$")],
             item: Annotated[str, Query(min_length=1, max_length=200)]) -> RankOut:
        """Where ``item`` ranks among the user's recommendations now (as GET recommendations
        with exclude_seen would list them: ties go to the item listed first in the catalogue)."""
        svc = live.current
        served = svc.recommend(user, 1)
        index = svc.index.get(item)
        if index is None:
            raise HTTPException(404, f"no item '{item}'")
        answer = served.answer
        scores = answer.scores
        seen = np.zeros(len(scores), dtype=bool)
        seen[answer.seen[answer.seen < len(scores)]] = True
        if index >= len(scores):  # added after this answer was made; the next one has it
            raise HTTPException(409, f"item '{item}' is newer than the user's answer; ask again")
        of = int(len(scores) - seen.sum())
        if seen[index]:
            return RankOut(user=user, item=item, rank=None, of=of, score=None, seen=True, k=answer.k)
        mine = scores[index]
        ahead = (scores > mine) | ((scores == mine) & (np.arange(len(scores)) < index))
        return RankOut(user=user, item=item, rank=int((ahead & ~seen).sum()) + 1, of=of,
                       score=float(mine) if np.isfinite(mine) else None, seen=False, k=answer.k)
