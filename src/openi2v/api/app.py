"""create_app(settings) and THE mapping of errors to HTTP answers."""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Scope

from openi2v import __version__, metrics
from openi2v.api import headers
from openi2v.api.bodies import BodyLimit
from openi2v.api.context import Context
from openi2v.api.routes import account, media, predictions, usage
from openi2v.api.schemas import V3Response
from openi2v.config import Settings
from openi2v.errors import InvalidInput, OpenI2VError, Unavailable
from openi2v.logs import setup_logging
from openi2v.store import Database
from openi2v.sweeper import Sweeper
from openi2v.system import die_with_parent

log = logging.getLogger("openi2v.api")
WEB = Path(__file__).resolve().parent.parent / "web"
# FastAPI's native OpenTelemetry hooks run on every request even with no exporter configured.
TELEMETRY_OFF = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def create_app(settings: Settings) -> FastAPI:
    """The API alone: workers are started beside it by ``openi2v serve`` (or run elsewhere)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    db.migrate()
    context = Context.build(settings, db)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from openi2v.api.webhooks import WebhookSender

        tasks = [asyncio.create_task(WebhookSender(context).run(), name="webhooks"),
                 asyncio.create_task(Sweeper(db, context.storage, settings).run(), name="retention")]
        yield
        for task in tasks:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        db.dispose()

    app = FastAPI(title="OpenI2V", version=__version__, lifespan=lifespan, telemetry=TELEMETRY_OFF)
    app.state.ctx = context
    app.add_middleware(BodyLimit, settings=settings)
    for router in (media.router, account.router, usage.router, predictions.router):  # the model route last
        app.include_router(router)
    app.add_api_route("/healthz", _healthz, methods=["GET"])
    _add_operations(app, context)
    _add_playground(app, settings, context.storage.origin)
    _add_error_handlers(app)
    return app


def serving_app(settings: Settings) -> FastAPI:
    """The app of a process that serves it until it exits (``openi2v serve``): logging as configured,
    and everything built so far kept out of the cyclic GC's scans, which otherwise grow with it and
    show up as latency spikes (not in ``create_app``: a test suite's servers come and go)."""
    setup_logging(settings)
    app = create_app(settings)
    gc.freeze()
    return app


def app_from_env() -> FastAPI:
    """The factory each API process calls when ``serve`` runs several (settings from the environment)."""
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        die_with_parent()  # a process of uvicorn's supervisor: never outlive it
    return serving_app(Settings())


def _error(status: int, message: str, headers: dict[str, str] | None = None, error: str | None = None) -> JSONResponse:
    body = {"code": status, "message": message, "data": None}
    if error is not None:  # as the hosted body has it (an error answer only: never a 2xx, which MCP reads)
        body["error"] = error
    return V3Response(body, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenI2VError)
    async def _domain(request: Request, exc: OpenI2VError) -> JSONResponse:
        if exc.status_code >= 500 and not exc.public:  # our fault (a disk, a database): the detail is for the log
            log.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc.message)
            return _error(exc.status_code, "internal server error")
        return _error(exc.status_code, exc.message, exc.headers, exc.error)

    @app.exception_handler(SQLAlchemyTimeout)
    async def _busy(request: Request, exc: SQLAlchemyTimeout) -> JSONResponse:
        # every database connection of this process in use for the pool's whole wait: a moment's overload
        log.warning("database connections all busy on %s %s", request.method, request.url.path)
        busy = Unavailable("the server is busy: retry")
        return _error(busy.status_code, busy.message, busy.headers)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=400)  # nobody is there to read it; nothing to log

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


def _add_playground(app: FastAPI, settings: Settings, files_origin: str | None) -> None:
    """The playground: static files, a client of the public API like any other, under its own strict CSP."""
    page_headers = headers.playground(settings.public_url, files_origin)

    async def page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html", headers=page_headers)

    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/playground", page, methods=["GET"], include_in_schema=False)
    app.mount("/web", _WebFiles(page_headers), name="web")


class _WebFiles(StaticFiles):
    """The playground's static files (/web/...), each sent with the playground's headers."""

    def __init__(self, page_headers: dict[str, str]) -> None:
        super().__init__(directory=WEB)
        self.page_headers = page_headers

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(self.page_headers)
        return response


async def _healthz() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok", "version": __version__}


def _add_operations(app: FastAPI, c: Context) -> None:
    """``/readyz`` for a load balancer, ``/metrics`` for Prometheus (metrics.py)."""

    async def readyz() -> JSONResponse:
        reason = await run_in_threadpool(metrics.readiness, c.db)
        if reason:
            return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ready", "version": __version__})

    async def prometheus() -> Response:
        body = await run_in_threadpool(metrics.exposition, c.db, c.models)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    app.add_api_route("/readyz", readyz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/metrics", prometheus, methods=["GET"], include_in_schema=False)
