"""``thaw serve``: a saved model online over an SQL store (the lead registers it in thaw/cli.py)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from thaw.errors import ThawError

DEFAULT_DB = "sqlite:///thaw.db"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def serve(
    model_dir: Annotated[Path, typer.Argument(help="A folder written by `thaw fit` (a stack, or any model).")],
    db: Annotated[str, typer.Option(help="Store URL: sqlite:///FILE (WAL, synchronous FULL) or postgresql+psycopg://USER@HOST:PORT/DB.")] = DEFAULT_DB,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (each loads the model; they share the store).")] = 1,
    cache: Annotated[int, typer.Option(help="Users whose scored catalogue each worker keeps (LRU).")] = 4096,
    tokens: Annotated[Path | None, typer.Option(help="Bearer tokens file (TOKEN=read,write per line), added to THAW_API_TOKENS.")] = None,
    results: Annotated[Path | None, typer.Option(help="A results folder of `thaw run`/`thaw evaluate`, served at /report (default: a report.html in MODEL_DIR).")] = None,
    loop: Annotated[str, typer.Option(help="uvicorn's event loop: auto (uvloop when installed), asyncio or uvloop.")] = "auto",
    http: Annotated[str, typer.Option(help="uvicorn's HTTP parser: auto (httptools when installed), h11 or httptools.")] = "auto",
) -> None:
    """Serve recommendations over HTTP: events in, recommendations out, API docs at /docs."""
    import uvicorn

    from thaw.serve.service import Service
    from thaw.serve.store import Store

    if workers < 1:
        raise ThawError("--workers must be at least 1")
    if not 0 <= port <= 65535:
        raise ThawError(f"--port must be a TCP port, 0 to 65535 (0: any free one), got {port}")
    from thaw.serve.auth import load_tokens

    if not load_tokens(tokens):
        if host not in LOOPBACK:
            raise ThawError(f"no API tokens (THAW_API_TOKENS or --tokens): refusing to listen on {host}; "
                            "without tokens thaw serve listens on loopback only")
        typer.echo("no API tokens: the API is open, so it listens on loopback only")
    if results is not None and not (results / "report.html").is_file():
        raise ThawError(f"--results {results}: no report.html there (a folder written by thaw run or thaw evaluate)")
    _check_can_listen(host, port)
    store = Store(db)  # checks the URL; nothing is created before the model has loaded
    service = Service(model_dir, store, cache_size=0, warm=False)  # only seeds the store
    found = store.init()
    users, items = service.seed_store()
    published = store.published_model()
    if published is None or published["version"] != service.version:  # what every replica serves from now
        store.publish_model(str(model_dir.resolve()), service.version)
    typer.echo(f"store {store.safe_url}: schema {'created' if found == 0 else 'ready'}; added {users} users "
               f"and {items} items of {service.data.name}; model {service.version}")
    store.close()
    del service
    with tempfile.TemporaryDirectory(prefix="thaw-metrics-") as shared:  # the workers' /metrics, summed
        os.environ.update(THAW_SERVE_MODEL=str(model_dir), THAW_SERVE_DB=db, THAW_SERVE_CACHE=str(cache),
                          THAW_SERVE_TOKENS_FILE="" if tokens is None else str(tokens),
                          THAW_SERVE_RESULTS="" if results is None else str(results),
                          THAW_SERVE_METRICS_DIR=shared if workers > 1 else "")
        uvicorn.run("thaw.serve.app:from_env", factory=True, host=host, port=port, workers=workers,
                    log_level="warning", access_log=False, timeout_graceful_shutdown=10, loop=loop, http=http)


def _check_can_listen(host: str, port: int) -> None:
    """A ThawError, before the store is touched, when ``host:port`` cannot be listened on (in
    use, not an address of this machine, a port below 1024 without the right)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        raise ThawError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def retrain(
    db: Annotated[str, typer.Option(help="The store the service writes to (the URL given to `thaw serve --db`).")] = DEFAULT_DB,
    model: Annotated[Path, typer.Option(help="The model folder being served.")] = Path("models/stack"),
    out: Annotated[Path, typer.Option(help="Folder the refitted model is saved to (not the one being served).")] = Path("models/stack-retrained"),
    val_frac: Annotated[float, typer.Option(help="Fraction of users held out for validation (model selection, the stack's routes).")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed for the validation users and the models.")] = 0,
) -> None:
    """Refit a served model on its data plus every event the store has gathered.

    The store's items and users come too; serve the result with POST /v1/admin/reload
    {"model_dir": OUT} (or SIGHUP after moving it in)."""
    from thaw.cli import check_writable
    from thaw.serve.retrain import retrain as refit

    if not 0 < val_frac < 1:
        raise ThawError("--val-frac must be a fraction between 0 and 1")
    if out.resolve() == model.resolve():
        raise ThawError("--out must not be the folder being served: write a new one and reload it")
    check_writable(out)
    done = refit(db, model, out, val_frac=val_frac, seed=seed)
    typer.echo(f"refitted {done['model'].name} on {done['interactions']} interactions ({done['from_store']} "
               f"from the store), {done['users']} users, {done['items']} items; saved to {done['path']}")
    typer.echo(f"serve it: curl -X POST -H 'Authorization: Bearer ...' -H 'Content-Type: application/json' "
               f"-d '{{\"model_dir\": \"{out}\"}}' http://127.0.0.1:8000/v1/admin/reload")


def main() -> None:
    """``python -m thaw.serve MODEL_DIR ...`` until ``thaw serve`` is registered."""
    import sys

    try:
        typer.run(serve)
    except ThawError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
