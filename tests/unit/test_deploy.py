"""deploy/ against the real CLI and Settings: every `openi2v` command, subcommand and flag that the
deployment files run exists, every OPENI2V_ variable they name is a setting, and their YAML parses.

Commands are read in each form the files use:
- a shell line: `ExecStart=/opt/openi2v/bin/openi2v worker --devices cuda:%i`, a README code span or
  block, a flow-style YAML list (`command: ["openi2v", "migrate"]`);
- a container whose image is ours (`openi2v-<x>`, or compose's `build.dockerfile`): the ENTRYPOINT of
  deploy/Dockerfile.<x>, then compose's `command` or Kubernetes' `args` (block lists included);
- a Dockerfile's ENTRYPOINT followed by its CMD.
A word `openi2v` followed by another word on its line is read as a command, so prose says "OpenI2V".
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import typer.main
import yaml  # PyYAML: installed with uvicorn[standard]

from openi2v.cli import app
from openi2v.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# The files that start OpenI2V: each must yield at least one command, or the reader missed it.
RUNS_OPENI2V = ["Dockerfile.api", "Dockerfile.worker", "compose.yaml", "k8s/migrate.yaml", "k8s/api.yaml",
                "k8s/worker.yaml", "systemd/openi2v-api.service", "systemd/openi2v-worker@.service", "README.md"]

# `openi2v` or a path to it in some bin/ directory, as a whole word (not /etc/openi2v, openi2v-api, openi2v.env).
COMMAND_START = re.compile(r"(?<![^\s=`\"'(\[,])(?:[\w.~-]*(?:/[\w.-]+)*/bin/)?openi2v(?=[\s\"'`\],]|$)")
COMMAND_END = re.compile(r"`|\|\||&&|[|;#<>)]")  # a shell operator, a comment or a code span's end
COMMAND_WORD = re.compile(r"-|[a-z][a-z0-9-]*$")  # a flag or a (sub)command's name
SETTING = re.compile(r"\bOPENI2V_[A-Z0-9_]*[A-Z0-9]\b")
OUR_IMAGE = re.compile(r"(?:^|/)openi2v-([a-z0-9]+)(?:[:@]|$)")


def is_openi2v(token: str) -> bool:
    return token == "openi2v" or token.endswith("/bin/openi2v")


def after_openi2v(argv: list[str]) -> list[str] | None:
    """The arguments after the `openi2v` program in a full command line, or None when it runs another."""
    for i, token in enumerate(argv):
        if is_openi2v(token):
            return argv[i + 1:]
    return None


def _word(text: str) -> str:
    return text.strip("\"'[](){},")


def shell_commands(text: str) -> list[list[str]]:
    """The arguments of each `openi2v ...` written on one (continued) line of text. The word is a
    user or database name, not the program, after a flag (`pg_isready -U openi2v`) or before a path
    (`chown openi2v /data`)."""
    text = text.replace("\\\n", " ")
    found = []
    for match in COMMAND_START.finditer(text):
        before = [w for w in map(_word, text[:match.start()].rsplit("\n", 1)[-1].split()) if w]
        line = text[match.end():].split("\n", 1)[0]
        words = [w for w in map(_word, COMMAND_END.split(line, 1)[0].split()) if w]
        if words and not (before and before[-1].startswith("-")) and COMMAND_WORD.match(words[0]):
            found.append(words)
    return found


def dockerfile_entry(text: str) -> tuple[list[str], list[str]]:
    """A Dockerfile's (ENTRYPOINT, CMD); the last of each counts, as in docker."""
    entry: list[str] = []
    cmd: list[str] = []
    for keyword, value in re.findall(r"^(ENTRYPOINT|CMD)\s+(.+)$", text, re.M):
        words = json.loads(value) if value.lstrip().startswith("[") else shlex.split(value)
        if keyword == "ENTRYPOINT":
            entry = words
        else:
            cmd = words
    return entry, cmd


def dockerfile_commands(text: str) -> list[list[str]]:
    entry, cmd = dockerfile_entry(text)
    args = after_openi2v(entry + cmd)
    return [args] if args else []


def image_dockerfile(container: dict, deploy: Path) -> Path | None:
    """The Dockerfile our image is built from (None: someone else's image)."""
    build = container.get("build")
    if isinstance(build, dict) and "dockerfile" in build:
        return deploy / Path(build["dockerfile"]).name
    match = OUR_IMAGE.search(str(container.get("image", "")))
    return deploy / f"Dockerfile.{match.group(1)}" if match else None


def _words(value) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value or []]


def _mappings(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _mappings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _mappings(value)


def container_commands(docs: list, deploy: Path) -> list[list[str]]:
    """The arguments each container or compose service of our images runs: the image's ENTRYPOINT
    and CMD, as compose (`entrypoint`, `command`) or Kubernetes (`command`, `args`) override them."""
    compose = any(isinstance(doc, dict) and "services" in doc for doc in docs)
    found = []
    for m in (m for doc in docs for m in _mappings(doc) if "image" in m or "build" in m):
        dockerfile = image_dockerfile(m, deploy)
        if dockerfile is None:
            continue
        entry, cmd = dockerfile_entry(dockerfile.read_text())
        if compose:
            entry, cmd = (_words(m["entrypoint"]), []) if "entrypoint" in m else (entry, cmd)
            argv = entry + (_words(m["command"]) if "command" in m else cmd)
        elif "command" in m:
            argv = _words(m["command"]) + _words(m.get("args"))
        else:
            argv = entry + (_words(m["args"]) if "args" in m else cmd)
        args = after_openi2v(argv)
        if args:
            found.append(args)
    return found


def deploy_commands(deploy: Path = DEPLOY) -> dict[str, list[list[str]]]:
    """Relative path -> the arguments of every `openi2v` it runs."""
    out: dict[str, list[list[str]]] = {}
    for path in sorted(p for p in deploy.rglob("*") if p.is_file()):
        text = path.read_text()
        found = shell_commands(text)
        if path.name.startswith("Dockerfile.") and not path.name.endswith(".dockerignore"):
            found += dockerfile_commands(text)
        if path.suffix in (".yaml", ".yml"):
            found += container_commands(list(yaml.safe_load_all(text)), deploy)
        out[str(path.relative_to(deploy))] = found
    return out


def cli():
    """The click command tree typer builds (typer vendors click: groups are told by their `commands`)."""
    return typer.main.get_command(app)


def _flags(command) -> set[str]:
    params = command.get_params(command.context_class(command))  # --help included
    return {name for p in params if p.param_type_name == "option" for name in p.opts + p.secondary_opts}


def check_command(root, args: list[str]) -> list[str]:
    """What in `openi2v ARGS` the CLI does not have: a command, a subcommand or a flag."""
    problems = []
    command, path, rest = root, ["openi2v"], list(args)
    while hasattr(command, "commands"):
        while rest and rest[0].startswith("-"):
            flag = rest.pop(0).split("=", 1)[0]
            if flag not in _flags(command):
                problems.append(f"`{' '.join(path)}` has no option {flag}")
        if not rest:
            return problems
        name = rest.pop(0)
        if name not in command.commands:
            return problems + [f"`{' '.join(path)}` has no command {name!r} "
                               f"(it has: {', '.join(sorted(command.commands))})"]
        command, path = command.commands[name], path + [name]
    known = _flags(command)
    for word in rest:
        flag = word.split("=", 1)[0]
        if flag.startswith("-") and flag not in ("-", "--") and flag not in known:
            problems.append(f"`{' '.join(path)}` has no option {flag} (it has: {', '.join(sorted(known))})")
    return problems


def known_variables(root) -> set[str]:
    """OPENI2V_<FIELD> for each Settings field, and the variables CLI options read themselves."""
    names = {f"OPENI2V_{field.upper()}" for field in Settings.model_fields}
    commands = [root]
    while commands:
        command = commands.pop()
        commands += list(getattr(command, "commands", {}).values())
        for p in command.params:
            names.update([p.envvar] if isinstance(p.envvar, str) else p.envvar or [])
    return names


def unknown_variables(text: str, known: set[str]) -> list[str]:
    return sorted(set(SETTING.findall(text)) - known)


def test_every_openi2v_command_and_flag_in_deploy_exists():
    root = cli()
    commands = deploy_commands()
    unread = [name for name in RUNS_OPENI2V if not commands.get(name)]
    assert not unread, f"found no openi2v command in: {', '.join(unread)} (missing file, or the reader broke)"
    problems: dict[str, set[str]] = {}
    for name, found in commands.items():
        for problem in (problem for args in found for problem in check_command(root, args)):
            problems.setdefault(problem, set()).add(f"deploy/{name}")
    assert not problems, "deploy/ runs what the CLI does not have:\n" + "\n".join(
        f"{problem}; in {', '.join(sorted(where))}" for problem, where in sorted(problems.items()))


def test_every_openi2v_variable_in_deploy_is_a_setting():
    known = known_variables(cli())
    problems: dict[str, set[str]] = {}
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        for name in unknown_variables(path.read_text(), known):
            problems.setdefault(name, set()).add(f"deploy/{path.relative_to(DEPLOY)}")
    assert not problems, "deploy/ names settings that are not fields of openi2v.config.Settings:\n" + "\n".join(
        f"{name}; in {', '.join(sorted(where))}" for name, where in sorted(problems.items()))


def test_the_deploy_yaml_parses():
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert files
    for path in files:
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert docs and all(isinstance(doc, dict) for doc in docs), f"{path}: expected YAML mappings"


# The checker itself: it finds commands in every form, and reports what does not exist.

def test_commands_are_read_from_shell_lines_and_flow_lists():
    text = ("ExecStart=/opt/openi2v/bin/openi2v serve --nope 1 \\\n  --port 80\n"
            "run `openi2v fly --high` then\n"
            'command: ["openi2v", "keys", "create", "--name", "a,b", "--bogus"]\n'
            "USER openi2v\nchown openi2v /data\n" 'test: ["CMD", "pg_isready", "-U", "openi2v", "-d", "x"]\n'
            "EnvironmentFile=/etc/openi2v/openi2v.env\nimage: openi2v-api:1 # openi2v_queue_depth\n"
            ".venv/bin/openi2v serve --port 1 | tee log && openi2v keys list\n")
    assert shell_commands(text) == [["serve", "--nope", "1", "--port", "80"], ["fly", "--high"],
                                    ["keys", "create", "--name", "a,b", "--bogus"], ["serve", "--port", "1"],
                                    ["keys", "list"]]


def test_commands_are_read_from_images_entrypoints(tmp_path):
    (tmp_path / "Dockerfile.api").write_text('FROM x\nENTRYPOINT ["openi2v"]\nCMD ["serve", "--port", "8000"]\n')
    assert dockerfile_commands((tmp_path / "Dockerfile.api").read_text()) == [["serve", "--port", "8000"]]
    assert dockerfile_commands('ENTRYPOINT ["python"]\nCMD ["-m", "http.server"]\n') == []
    compose = {"services": {
        "api": {"build": {"context": "..", "dockerfile": "deploy/Dockerfile.api"}, "command": ["worker", "--x"]},
        "plain": {"image": "openi2v-api"},
        "shell": {"image": "openi2v-api", "entrypoint": ["sh", "-c"], "command": "echo"},
        "db": {"image": "postgres:17", "command": ["postgres", "-c", "fsync=off"]}}}
    assert container_commands([compose], tmp_path) == [["worker", "--x"], ["serve", "--port", "8000"]]
    pod = {"kind": "Pod", "spec": {"containers": [
        {"name": "a", "image": "registry.example/openi2v-api:1", "args": ["migrate"]},
        {"name": "b", "image": "registry.example/openi2v-api:1"},
        {"name": "c", "image": "openi2v-api", "command": ["/venv/bin/openi2v", "keys"], "args": ["list"]},
        {"name": "d", "image": "busybox", "args": ["serve"]}]}}
    assert container_commands([pod], tmp_path) == [["migrate"], ["serve", "--port", "8000"], ["keys", "list"]]


def test_the_checker_reports_each_missing_command_flag_and_setting():
    root = cli()
    assert check_command(root, ["serve", "--host", "0.0.0.0", "--workers=0", "--no-dev"]) == []
    assert check_command(root, ["keys", "create", "--name", "a", "--balance", "5"]) == []
    assert check_command(root, ["serve", "--nope", "1"])[0].startswith("`openi2v serve` has no option --nope")
    assert check_command(root, ["fly", "--high"])[0].startswith("`openi2v` has no command 'fly'")
    assert check_command(root, ["keys", "mint"])[0].startswith("`openi2v keys` has no command 'mint'")
    assert check_command(root, ["keys", "create", "--bogus"])[0].startswith(
        "`openi2v keys create` has no option --bogus")
    text = "OPENI2V_DATA_DIR=/x OPENI2V_URL=http://y ${OPENI2V_NOPE} OPENI2V_<NAME> openi2v_queue_depth"
    assert unknown_variables(text, known_variables(root)) == ["OPENI2V_NOPE"]
