"""openi2v serve | worker | migrate | keys | sweep | submit | generate | models | doctor: thin calls into the modules above."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import NoReturn, Optional

import typer

from openi2v.config import KLING_MODEL, Settings

app = typer.Typer(help="OpenI2V: a self-hosted, WaveSpeed-compatible image-to-video service.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
models_app = typer.Typer(help="Diffusion model presets and their weights.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _settings(**overrides) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Interface to bind."),
          port: int = typer.Option(8000, help="Port to listen on."),
          workers: Optional[int] = typer.Option(None, help="Worker processes beside the API (0: API only)."),
          api_processes: Optional[int] = typer.Option(None, help="Processes answering HTTP (default: one per core, at most 4)."),
          dev: bool = typer.Option(False, help="Create (first start) and print a development API key.")) -> None:
    """Run the API with its worker processes beside it (the one-box default), or alone (--workers 0)."""
    from openi2v.system import use_metrics_dir

    use_metrics_dir()  # first: every process started from here counts into it
    from openi2v.api import server
    from openi2v.logs import setup_logging
    from openi2v.worker.pool import BESIDE_API_NICENESS, WorkerPool, plan

    settings = _servable_settings(workers=workers, api_processes=api_processes)
    setup_logging(settings)
    url = settings.public_url.rstrip("/") or f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}"
    typer.echo(f"OpenI2V {url}")
    typer.echo(f"  API:        {url}/api/v3/{KLING_MODEL}")
    typer.echo(f"  Playground: {url}/playground")
    if dev:
        typer.echo(f"  API key:    {_dev_key(settings)}")
    pool = WorkerPool(plan(settings, settings.workers, niceness=BESIDE_API_NICENESS))
    pool.start()
    threading.Thread(target=pool.supervise, name="supervisor", daemon=True).start()
    try:
        server.run(settings, host, port)
    finally:
        pool.stop()


@app.command()
def worker(models: Optional[str] = typer.Option(None, help="Model ids to claim, comma-separated (default: every "
                                                            "one served), so that their weights stay loaded."),
           concurrency: int = typer.Option(1, min=1, help="Worker processes (on each device, with --devices)."),
           devices: Optional[str] = typer.Option(None, help="Devices, comma-separated (e.g. cuda:0,cuda:1): "
                                                             "workers on each, every one with its own engine."),
           metrics_port: Optional[int] = typer.Option(None, help="Serve /metrics and /readyz on this port.")) -> None:
    """Run workers without the API: they claim jobs from the shared database (OPENI2V_DATABASE_URL).

    SIGTERM drains them: nothing more is claimed, and a job in hand finishes within OPENI2V_DRAIN_S or
    goes back to the queue."""
    import signal

    from openi2v.system import use_metrics_dir

    use_metrics_dir()  # first: every process started from here counts into it

    from openi2v.logs import setup_logging
    from openi2v.worker.pool import WorkerPool, plan

    model_ids = tuple(m.strip() for m in models.split(",") if m.strip()) if models else None
    settings = _servable_settings(run_engines=model_ids or True)
    setup_logging(settings)
    device_list = tuple(d.strip() for d in devices.split(",") if d.strip()) if devices else ()
    pool = WorkerPool(plan(settings, concurrency, model_ids, device_list))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # set from a thread: this one may hold the event's lock
        signal.signal(sig, lambda *_: threading.Thread(target=stop.set).start())
    pool.start()
    threading.Thread(target=pool.supervise, name="supervisor", daemon=True).start()
    if metrics_port is not None:
        from openi2v.metrics import serve_worker_metrics

        serve_worker_metrics(settings, pool, metrics_port)
    typer.echo(f"OpenI2V workers: {len(pool.specs)} process(es) claiming "
               f"{', '.join(model_ids or settings.engines)}" + (f"; metrics on :{metrics_port}" if metrics_port else ""))
    stop.wait()
    typer.echo("stopping: draining the workers")
    pool.stop()


@app.command()
def migrate() -> None:
    """Bring the database's schema up to date, then exit (run once per upgrade, before the servers)."""
    settings = _settings()
    _migrate(settings)
    from sqlalchemy.engine import make_url

    typer.echo(f"database migrated: {make_url(settings.db_url).render_as_string(hide_password=True)}")


def _servable_settings(run_engines: bool | tuple[str, ...] | None = None, **overrides) -> Settings:
    """The settings, checked before any API process or worker starts: a configuration that could
    only fail (a malformed value, an engine that cannot start here, a database that cannot be used)
    exits at once with one line naming the setting to fix. The database is migrated here, once.

    ``auto`` engines are decided here, once, and every process started from now on (API processes
    read the environment) gets the decision: no API process probes for weights or a GPU. An API
    without workers (``--workers 0``) only checks that the engines are named right: the machines
    that run them may be others. ``run_engines``: whether this machine runs the engines, True for all
    of them, or the model ids it runs (default: when it starts workers)."""
    from openi2v.engines import registry

    with _config_errors():
        settings = _settings(**overrides)
        settings.engines = registry.resolve(settings)
        os.environ["OPENI2V_ENGINES"] = json.dumps(settings.engines)
        from openi2v.storage import from_settings

        from_settings(settings)  # a bucket it cannot sign for: one line now, not a traceback in each process
        if run_engines is None:
            run_engines = settings.workers > 0
        if run_engines:
            registry.check(settings, None if run_engines is True else run_engines)
    _migrate(settings)
    return settings


@contextlib.contextmanager
def _config_errors():
    """A configuration that cannot work exits with one line naming the setting (or the preset file's line)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        yield
    except ValidationError as exc:
        _exit_config("; ".join(f"OPENI2V_{str(e['loc'][0]).upper()}: {e['msg'].lower()} (got {e['input']!r})"
                               for e in exc.errors()))
    except SettingsError as exc:  # a JSON setting that does not parse
        field = re.search(r'field "(\w+)"', str(exc))
        _exit_config(f"OPENI2V_{field.group(1).upper()}: cannot parse the value ({exc.__cause__})"
                     if field else str(exc))
    except ValueError as exc:  # registry's and the preset file's sentences name their setting or line
        _exit_config(str(exc))


def _migrate(settings: Settings) -> None:
    from sqlalchemy.exc import ArgumentError, OperationalError

    from openi2v.store import Database

    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _exit_config(f"OPENI2V_DATA_DIR: {exc}")
    try:
        Database(settings.db_url).migrate()
    except (ArgumentError, ImportError) as exc:  # a malformed URL, or one whose driver is not installed
        _exit_config(f"OPENI2V_DATABASE_URL: {type(exc).__name__}: {exc}")
    except OperationalError as exc:  # no such server, database or user; a wrong password
        _exit_config(f"OPENI2V_DATABASE_URL: cannot connect: {str(exc.orig).strip().splitlines()[0]}")


def _exit_config(message: str) -> NoReturn:
    typer.echo(f"error: {' '.join(message.split())}", err=True)  # one line, whatever the message held
    raise typer.Exit(2)


def _dev_key(settings: Settings) -> str:
    """The development key lives in data_dir/dev-key (mode 600); only its hash is in the database."""
    from openi2v.domain.billing import to_micros
    from openi2v.store import AccountStore, Database

    path = settings.data_dir / "dev-key"
    accounts = AccountStore(Database(settings.db_url))
    if path.exists():
        key = path.read_text().strip()
        try:
            accounts.authenticate(key)
            return key
        except Exception:
            pass  # revoked or from another database: make a new one
    _, key = accounts.create_key("development", to_micros(100))
    path.write_text(key + "\n")
    os.chmod(path, 0o600)
    return key


@keys_app.command("create")
def keys_create(name: str = typer.Option("", help="A label for the key."),
                balance: float = typer.Option(100.0, help="Starting balance in USD."),
                scenario: Optional[str] = typer.Option(None, help="Make every prediction of the key follow a "
                                                                  "scenario: a name or settings (README: Scenarios).")) -> None:
    """Create a key; the key itself is printed once, alone on the last line."""
    from openi2v.domain.billing import to_micros

    key_id, key = _accounts().create_key(name, to_micros(balance), _scenario(scenario))
    simulated = f", scenario {scenario}" if scenario else ""
    typer.echo(f"created key {key_id} ({name or 'unnamed'}) with balance ${balance:.2f}{simulated}; "
               "store it now, it is not shown again:")
    typer.echo(key)


@keys_app.command("set-scenario")
def keys_set_scenario(key: str = typer.Argument(..., help="Key id or prefix, as `keys list` shows."),
                      scenario: str = typer.Argument(..., help="A scenario name or settings; `none`: real again.")) -> None:
    """Make the key's next predictions follow a scenario (those made already keep theirs)."""
    accounts = _accounts()
    spec = None if scenario.strip() == "none" else _scenario(scenario)
    accounts.set_scenario(_key_id(accounts, key), spec)
    typer.echo(f"{key}: scenario {spec}" if spec else f"{key}: no scenario; its predictions are real")


def _scenario(spec: str | None) -> str | None:
    """A scenario SPEC, checked (exit 2 naming what is wrong)."""
    from openi2v.domain.scenarios import Scenario

    if spec is None:
        return None
    try:
        return Scenario.parse(spec).spec
    except ValueError as exc:
        typer.echo(f"error: --scenario: {exc}", err=True)
        raise typer.Exit(2) from None


@keys_app.command("list")
def keys_list() -> None:
    from openi2v.domain.billing import to_usd

    for k in _accounts().list_keys():
        state = "revoked" if k.revoked else "active"
        simulated = f"\tscenario: {k.scenario}" if k.scenario else ""
        typer.echo(f"{k.id}\t{k.prefix}…\t{state}\t${to_usd(k.balance_micros):.2f}\t{k.name}{simulated}")


@keys_app.command("revoke")
def keys_revoke(key: str = typer.Argument(..., help="Key id or prefix, as `keys list` shows.")) -> None:
    """Refuse the key from now on, and cancel its queued and running predictions (nothing charged)."""
    from openi2v.store import PredictionStore

    accounts = _accounts()
    key_id = _key_id(accounts, key)
    accounts.revoke(key_id)
    cancelled = PredictionStore.from_settings(accounts.db, _settings()).cancel_open(key_id)
    typer.echo(f"revoked {key}; cancelled {len(cancelled)} open prediction(s)")


@keys_app.command("topup")
def keys_topup(key: str = typer.Argument(..., help="Key id or prefix, as `keys list` shows."),
               usd: float = typer.Argument(..., help="Amount to add, in USD.")) -> None:
    """Add balance to a key (a credit in its ledger)."""
    from openi2v.domain.billing import to_micros, to_usd

    if not (0 < usd <= MAX_TOPUP_USD):  # also refuses nan and inf
        typer.echo(f"error: USD must be more than 0 and at most {MAX_TOPUP_USD:,}", err=True)
        raise typer.Exit(2)
    accounts = _accounts()
    key_id = _key_id(accounts, key)
    accounts.credit(key_id, to_micros(usd))
    typer.echo(f"added ${usd:.2f} to {key}; balance ${to_usd(accounts.balance(key_id)):.2f}")


@keys_app.command("show")
def keys_show(key: str = typer.Argument(..., help="Key id or prefix, as `keys list` shows.")) -> None:
    """A key's balance, what its open predictions hold, and its latest ledger entries."""
    import datetime as dt

    from openi2v.domain.billing import to_usd

    accounts = _accounts()
    balance, held, entries = accounts.statement(_key_id(accounts, key))
    typer.echo(f"balance ${to_usd(balance):.2f} (after ${to_usd(held):.2f} held by open predictions)")
    for e in entries:
        when = dt.datetime.fromtimestamp(e["created_at"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        typer.echo(f"{when}\t{e['kind']}\t{to_usd(e['amount_micros']):+.2f}\t{e['prediction_id'] or ''}")


MAX_TOPUP_USD = 1_000_000


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="The report as JSON.")) -> None:
    """What this machine can serve and why: GPUs, versions, each preset's weights, memory and speed-ups,
    what `auto` picks, and the command that fixes each missing piece. Exit 1 when the configured
    engines cannot start."""
    import dataclasses

    from openi2v import doctor as checkup

    with _config_errors():
        settings = _settings()
    report = checkup.examine(settings)
    typer.echo(json.dumps(dataclasses.asdict(report), indent=2) if as_json else "\n".join(checkup.render(report)))
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def sweep() -> None:
    """Delete outputs and uploads older than OPENI2V_RETENTION_DAYS now (the server also does it every
    OPENI2V_SWEEP_INTERVAL_S); for a cron job beside API processes that run elsewhere."""
    from openi2v.storage import from_settings
    from openi2v.sweeper import Sweeper

    settings = _settings()
    swept = Sweeper(_database(), from_settings(settings), settings).sweep_all()
    typer.echo(f"removed the files of {swept.predictions} expired prediction(s) and {swept.uploads} upload(s)")


def _accounts():
    from openi2v.store import AccountStore

    return AccountStore(_database())


def _database():
    from openi2v.store import Database

    db = Database(_settings().db_url)
    db.migrate()
    return db


def _key_id(accounts, key: str) -> int:
    from openi2v.errors import NotFound

    try:
        return accounts.find(key)
    except NotFound as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2)


@app.command()
def submit(image: Path = typer.Argument(..., exists=True, dir_okay=False),
           prompt: str = typer.Option(..., "--prompt", "-p"),
           negative_prompt: str = typer.Option("", help="What to avoid."),
           duration: int = typer.Option(5, help="5 or 10 seconds."),
           guidance_scale: float = typer.Option(0.5),
           seed: Optional[int] = typer.Option(None),
           wait: bool = typer.Option(False, help="Wait for the result with a progress bar."),
           url: str = typer.Option("http://localhost:8000", envvar="OPENI2V_URL", help="Server base URL."),
           key: str = typer.Option(..., envvar="WAVESPEED_API_KEY", help="API key.")) -> None:
    """Submit IMAGE to a running server (a client of its public API)."""
    from openi2v.client import Client
    from openi2v.domain.prediction import Status

    client = Client(url, key)
    image_url = client.upload(image)
    body = {"image": image_url, "prompt": prompt, "negative_prompt": negative_prompt, "duration": duration,
            "guidance_scale": guidance_scale}
    if seed is not None:
        body["seed"] = seed
    data = client.submit(KLING_MODEL, body)
    typer.echo(f"prediction {data['id']}: {data['status']}")
    if wait:
        data = client.wait(data["id"])
        done = data["status"] == Status.COMPLETED.value
        typer.echo("\n".join(data["outputs"]) if done else data["error"] or data["status"])
        raise typer.Exit(0 if done else 1)


@app.command()
def generate(image: Path = typer.Argument(..., exists=True, dir_okay=False),
             prompt: str = typer.Option(..., "--prompt", "-p"),
             negative_prompt: str = typer.Option(""),
             duration: int = typer.Option(5, help="5 or 10 seconds."),
             seed: Optional[int] = typer.Option(None),
             guidance_scale: float = typer.Option(0.5),
             model: str = typer.Option("motion", help="motion, or a preset from `openi2v models list`."),
             weights: Optional[Path] = typer.Option(None, help="A preset's diffusers directory (default: pulled)."),
             steps: Optional[int] = typer.Option(None, help="Override the preset's denoising steps."),
             size: Optional[str] = typer.Option(None, help="Override the preset's size, WxH."),
             device: Optional[str] = typer.Option(None, help="cpu or cuda."),
             output: Path = typer.Option(Path("out.mp4"), "-o", "--output")) -> None:
    """Run an engine locally, without a server: the camera-motion engine or any diffusion preset."""
    import shutil

    from rich.progress import Progress

    from openi2v.domain.inputs import check_image, parse_request
    from openi2v.engines.base import EngineJob
    from openi2v.errors import InvalidInput

    try:
        req = parse_request({"image": "data:local", "prompt": prompt, "negative_prompt": negative_prompt,
                             "duration": duration, "guidance_scale": guidance_scale, "seed": seed})
        img = check_image("image", image.read_bytes())
    except InvalidInput as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2)
    engine = _local_engine(model, weights, steps, size, device)
    engine.load()
    with tempfile.TemporaryDirectory() as tmp, Progress() as bar:
        task = bar.add_task("rendering", total=100)
        started = time.perf_counter()
        result = engine.run(EngineJob(img, req.prompt, req.negative_prompt, req.guidance_scale, req.duration,
                                      req.seed, Path(tmp)), lambda f: bar.update(task, completed=f * 100),
                            lambda: False)
        shutil.copyfile(result.video, output)
    if "camera_plan" in result.details:
        typer.echo(f"camera plan: {' -> '.join(result.details['camera_plan']['steps'])}")
    else:
        typer.echo(f"{model}: {result.details['steps']} steps, CFG {result.details['cfg']}, "
                   f"speed-ups {', '.join(result.details['speedups'])}")
    typer.echo(f"seed {req.seed}; {result.frames} frames {result.width}x{result.height} @ {result.fps} fps "
               f"in {time.perf_counter() - started:.2f} s -> {output}")


def _local_engine(model: str, weights: Optional[Path], steps: Optional[int], size: Optional[str],
                  device: Optional[str]):
    """The engine `generate` runs in this process (no isolation: one job, then exit)."""
    from openi2v.engines import registry

    settings = _settings(diffusion_steps=steps, diffusion_size=size, device=device)
    try:
        return registry.in_process_engine(settings, model, weights)
    except (KeyError, ValueError) as exc:  # an unknown preset, a malformed preset file or size
        typer.echo(f"error: {exc.args[0]}", err=True)
        raise typer.Exit(2)


@models_app.command("list")
def models_list() -> None:
    """The diffusion presets: native clip, steps, guidance, whether the weights are here, GPU memory, speed-ups."""
    from openi2v import weights
    from openi2v.engines.catalog import presets

    with _config_errors():
        settings = _settings()
        catalog = presets(settings)
    typer.echo("name\trepo\tsize\tfps\tframes\tsteps\tcfg\tweights\ton disk\tgpu memory\tspeed-ups")
    for p in catalog.values():
        here = weights.status(settings, p)
        loras = f" + {len(p.loras)} LoRA{'s' if len(p.loras) > 1 else ''}" if p.loras else ""
        typer.echo("\t".join([p.name, f"{p.repo or p.path}{loras}", f"{p.width}x{p.height}", str(p.fps), str(p.frames),
                              str(p.steps), f"{p.cfg:g}{' (distilled)' if p.distilled else ''}", here.state,
                              weights.size_text(here.bytes_on_disk), _gpu_memory(p), ",".join(p.speedups)]))


def _gpu_memory(p) -> str:
    if p.gpu_gib is None:
        return "unknown"
    return f"{p.gpu_gib:g} GiB {'measured' if p.gpu_gib_measured else 'estimate'}"


@models_app.command("pull")
def models_pull(name: str = typer.Argument(..., help="A preset from `openi2v models list`."),
                dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be fetched and skipped; "
                                             "download nothing.")) -> None:
    """Download a preset's weights (and LoRAs) from the Hugging Face Hub into the weights directory,
    checking each file's size and hash. HF_TOKEN and HF_ENDPOINT are honoured."""
    from rich.console import Console

    from openi2v.engines.catalog import presets, weights_of

    if importlib.util.find_spec("huggingface_hub") is None:
        _exit_config("models pull needs huggingface_hub: pip install -e '.[diffusion]'")
    from openi2v import weights

    with _config_errors():
        settings = _settings()
        catalog = presets(settings)
    if name not in catalog:
        typer.echo(f"error: unknown preset {name!r}; known: {', '.join(catalog)}", err=True)
        raise typer.Exit(2)
    preset = catalog[name]
    try:
        if dry_run:
            the_plan = weights.plan(settings, preset)
            typer.echo("\n".join(the_plan.lines(weights.to_fetch(settings, preset, the_plan))))
            return
        plan = weights.pull(settings, preset, console=Console())
    except weights.PullError as exc:
        reason = " ".join(exc.message.split())  # one line, whatever the message held
        typer.echo(f"error: could not download {name} ({preset.repo or preset.path}): {reason}", err=True)
        raise typer.Exit(1)
    source = weights_of(preset, catalog)
    if source.path:
        typer.echo(f"{name}: nothing to pull for the pipeline: its weights are the local directory {source.path}"
                   + (f"; {len(plan.files)} LoRA file(s) verified" if plan.files else ""))
        return
    total = sum(r.size for r in plan.files)
    typer.echo(f"{name}: {source.repo} -> {settings.weights_root / source.name} "
               f"({len(plan.files)} files, {weights.size_text(total)}, verified)")


if __name__ == "__main__":
    app()
