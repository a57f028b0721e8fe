"""``openi2v doctor``: what this machine can serve, why, and the command that fixes each missing piece.

A GPU team's first question is why a box does not serve the preset they expected. The
answer is made of facts gathered here (``examine``: the GPUs, the versions, which attention
backends import, each preset's weights and memory) and of the rules the engines themselves
apply, never restated: ``accel.decide`` for the speed-ups a GPU gets, ``registry.auto`` for
what ``auto`` picks, ``registry.check`` for whether the configured engines can start.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import shutil
import subprocess
from dataclasses import dataclass, field

from openi2v.config import Settings
from openi2v.engines import accel, registry
from openi2v.engines.catalog import Preset, presets, weights_of

GIB = 2**30
PACKAGES = ("torch", "diffusers", "transformers", "huggingface_hub", "torchao", "accelerate")


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    free_bytes: int
    total_bytes: int
    capability: tuple[int, int]


@dataclass
class PresetReport:
    name: str
    weights: str  # present, partial or absent
    missing: list[str]
    bytes_on_disk: int
    fit: str  # fits, fits with group offload, may not fit, does not fit, unknown, no GPU
    why: str
    speedups: list[str]
    skipped: dict[str, str]
    fixes: list[str] = field(default_factory=list)


@dataclass
class Report:
    gpus: list[GpuInfo]
    versions: dict[str, str]
    attention: dict[str, str]  # backend -> "ok" or why not
    presets: list[PresetReport]
    auto: tuple[str, str] | None  # what auto serves, and why (None: the auto preset is unknown)
    engines: dict[str, str]  # model id -> engine, as configured
    problem: str | None  # why the configured engines cannot start (the exit status is then 1)
    fixes: list[str]

    @property
    def ok(self) -> bool:
        return self.problem is None


def gpus() -> list[GpuInfo]:
    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        out.append(GpuInfo(i, props.name, free, total, (props.major, props.minor)))
    return out


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "openi2v": importlib.metadata.version("openi2v")}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    if importlib.util.find_spec("torch") is not None:
        import torch

        out["cuda (torch build)"] = torch.version.cuda or "none (a CPU build)"
    out["driver"] = _driver()
    return out


def _driver() -> str:
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed ({type(exc).__name__})"
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"


def attention(gpu: GpuInfo | None) -> dict[str, str]:
    """Each attention backend a preset or ``OPENI2V_SPEEDUPS`` may name: "ok", or why it cannot run here."""
    out = {}
    for name in accel.ATTENTION:
        package = accel.ATTENTION_PACKAGES.get(name)
        out[name] = (_imports(package) if package else "ok") if name not in accel.GPU_ATTENTION or gpu else \
            "GPU only"
    return out


def _imports(package: str) -> str:
    """"ok" when ``package`` imports (a kernel built for another CUDA or torch is installed, yet fails here)."""
    if importlib.util.find_spec(package) is None:
        return f"{package} is not installed"
    try:
        importlib.import_module(package)
    except Exception as exc:  # whatever a broken build raises: the reason, in a line
        return f"{package} does not import ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return "ok"


def fit(settings: Settings, preset: Preset, gpu: GpuInfo | None) -> tuple[str, str, list[str], dict[str, str]]:
    """Whether ``preset`` fits ``gpu``'s memory, why, and the speed-ups it would run with there."""
    applied, skipped = accel.decide(registry.speedups_for(settings, preset),
                                    accel.Gpu(gpu.capability, gpu.total_bytes) if gpu else None)
    if gpu is None:
        return "no GPU", "diffusion presets need a CUDA GPU (OPENI2V_DEVICE=cpu runs them only at a toy size)", \
            applied, skipped
    have = gpu.total_bytes / GIB
    if preset.gpu_gib is None:
        return "unknown", "no memory figure for this preset (set gpu_gib in the preset file)", applied, skipped
    need = f"needs about {preset.gpu_gib:g} GiB ({'measured' if preset.gpu_gib_measured else 'an estimate'})"
    # The figure is with fp8 where the preset runs it; without fp8 at most the weights double, so twice
    # the figure bounds it from above (and the figure itself from below).
    bound = preset.gpu_gib * (2 if "fp8" in preset.speedups and "fp8" not in applied else 1)
    if bound > preset.gpu_gib:
        need += " with fp8, which will not run: at most twice that without it"
    if bound <= have:
        return "fits", f"{need}; this GPU has {have:.0f} GiB", applied, skipped
    if "group_offload" in applied:
        return "fits with group offload", (f"{need}; this GPU has {have:.0f} GiB, so blocks stream from the CPU "
                                           "(slower)"), applied, skipped
    fix = "add offload to OPENI2V_SPEEDUPS, or use a smaller preset"
    if preset.gpu_gib <= have:
        return "may not fit", f"{need}; this GPU has {have:.0f} GiB: if it runs out, {fix}", applied, skipped
    return "does not fit", f"{need}; this GPU has {have:.0f} GiB: {fix}", applied, skipped


def examine(settings: Settings, found: list[GpuInfo] | None = None) -> Report:
    from openi2v.weights import status

    found = gpus() if found is None else found
    number = settings.device.partition(":")[2] or "0"
    index = int(number) if settings.device.startswith("cuda") and number.isdigit() else None
    gpu = next((g for g in found if g.index == index), None)
    fixes: list[str] = []
    missing = registry.missing_diffusion_packages()
    if missing:
        fixes.append("pip install -e '.[diffusion]'  # diffusion presets need " + " and ".join(missing))
    backends = attention(gpu)  # once: a broken kernel package runs its failing import each time
    try:
        catalog = presets(settings)
    except ValueError as exc:  # a malformed preset file: nothing else can be judged
        return Report(found, versions(), backends, [], None, dict(settings.engines), str(exc), fixes)
    reports = []
    for preset in catalog.values():
        weights = status(settings, preset)
        verdict, why, applied, skipped = fit(settings, preset, gpu)
        report = PresetReport(preset.name, weights.state, weights.missing, weights.bytes_on_disk, verdict, why,
                              applied, skipped)
        source = weights_of(preset, catalog)
        if weights.state != "present":
            report.fixes.append(f"openi2v models pull {preset.name}" if not source.path else
                                f"put the diffusers pipeline in {source.path} (this preset's path)")
        backend = registry.speedups_for(settings, preset).attention
        if backend and backends[backend] != "ok":
            report.fixes.append(f"attention={backend}: {backends[backend]}")
        reports.append(report)
    try:
        auto = registry.auto(settings)
    except ValueError as exc:
        auto, fixes = None, fixes + [str(exc)]
    problem = None
    try:
        registry.check(settings)
    except ValueError as exc:
        problem = str(exc)
    return Report(found, versions(), backends, reports, auto, dict(settings.engines), problem, fixes)


def render(report: Report) -> list[str]:
    lines = ["GPUs"]
    if not report.gpus:
        lines.append("  none: no CUDA GPU (or torch without CUDA) here")
    for g in report.gpus:
        lines.append(f"  cuda:{g.index} {g.name}: {g.free_bytes / GIB:.1f} GiB free of {g.total_bytes / GIB:.1f} GiB, "
                     f"compute capability {g.capability[0]}.{g.capability[1]}")
    lines.append("Versions")
    lines += [f"  {name}: {value}" for name, value in report.versions.items()]
    lines.append("Attention backends")
    lines += [f"  {name}: {state}" for name, state in report.attention.items()]
    lines.append("Presets (weights; memory on this GPU; speed-ups it would run with)")
    for p in report.presets:
        size = f", {p.bytes_on_disk / GIB:.1f} GiB on disk" if p.bytes_on_disk else ""
        lines.append(f"  {p.name}: weights {p.weights}{size}; {p.fit}: {p.why}")
        if p.missing:
            lines.append(f"    missing: {', '.join(p.missing[:5])}{' ...' if len(p.missing) > 5 else ''}")
        lines.append(f"    speed-ups: {', '.join(p.speedups)}" +
                     "".join(f"; {name} skipped ({why})" for name, why in p.skipped.items()))
        lines += [f"    fix: {fix}" for fix in p.fixes]
    lines.append("Engines")
    for model_id, engine in report.engines.items():
        lines.append(f"  {model_id}: {engine}")
    if report.auto:
        lines.append(f"  auto would serve {report.auto[0]}: {report.auto[1]}")
    lines += [f"  fix: {fix}" for fix in report.fixes]
    lines.append("  ok: the configured engines can start" if report.ok else
                 f"  cannot start: {report.problem}")
    return lines
