"""create_app(settings) and THE mapping of errors to HTTP answers."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from openi2v import __version__
from openi2v.api.context import Context
from openi2v.api.routes import account, media, predictions
from openi2v.config import Settings
from openi2v.engines.registry import build_engines
from openi2v.errors import InvalidInput, OpenI2VError
from openi2v.store import Database

log = logging.getLogger("openi2v.api")
WEB = Path(__file__).resolve().parent.parent / "web"


def create_app(settings: Settings, workers: int | None = None) -> FastAPI:
    """The API; with ``workers`` > 0 it also runs that many worker processes beside it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    db.migrate()
    engines = build_engines(settings)
    context = Context.build(settings, db, {m: e.description for m, e in engines.items()})
    n_workers = settings.workers if workers is None else workers

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = None
        if n_workers > 0:
            from openi2v.worker.loop import WorkerPool

            pool = WorkerPool(settings, n_workers)
            pool.start()
        yield
        if pool is not None:
            pool.stop()
        db.dispose()

    app = FastAPI(title="OpenI2V", version=__version__, lifespan=lifespan)
    app.state.ctx = context
    for router in (media.router, account.router, predictions.router):
        app.include_router(router)
    app.add_api_route("/healthz", lambda: {"status": "ok", "version": __version__}, methods=["GET"])
    _add_error_handlers(app)
    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message, "data": None}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenI2VError)
    async def _domain(_: Request, exc: OpenI2VError) -> JSONResponse:
        return _error(exc.status_code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return _error(400, InvalidInput(field, first.get("msg", "is invalid").lower()).message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal server error")
