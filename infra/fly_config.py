"""fly.toml: Fly.io's app configuration for a `fly` stack, rendered from the DeploymentSpec.

    python scripts/fly_config.py              # rewrite fly.toml from infra/examples/Pulumi.fly.yaml
    python scripts/fly_config.py --check      # exit 1 if fly.toml is stale (a test runs this)
    python scripts/fly_config.py --variables  # the `fly secrets set` command for the secrets
    python scripts/fly_config.py --stack-file Pulumi.prod.yaml   # your own fly stack

`fly deploy` reads fly.toml, builds the Dockerfile on Fly's remote builder (or deploys `imageName`
when the stack has buildImage: false) and rolls the machines one by one, each passing its health check.
Reference: fly.io/docs/reference/configuration.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from infra import config_as_code
from infra.config import HEALTH_PATH, REPO_ROOT, StackConfig
from infra.spec import build_spec
from infra.targets import fly

OUTPUT = REPO_ROOT / "fly.toml"
HEADER = """\
# Fly.io app configuration for the reranker (fly.io/docs/reference/configuration).
# GENERATED from {source} by `python scripts/fly_config.py`: do not edit by hand, change the
# stack settings and regenerate (a test fails when this file is stale).
# Secrets are not in this file: set them with `fly secrets set` (python scripts/fly_config.py --variables).
# Machines: `fly scale count {max_machines}` creates the machines the proxy starts and stops
# (it keeps min_machines_running = {min_machines} running).
"""


def document(cfg: StackConfig) -> dict[str, Any]:
    spec = build_spec(cfg)
    settings: fly.Settings = cfg.target_settings
    health = spec.health
    build: dict[str, Any]
    if spec.image.build:
        build = {
            "dockerfile": spec.image.dockerfile.relative_to(REPO_ROOT).as_posix(),
            "build-target": spec.image.target,  # the image flavour's Dockerfile stage
        }
        if spec.image.build_args:
            build["args"] = dict(spec.image.build_args)
    else:
        build = {"image": spec.image.name}
    return {
        "app": settings.app,
        "primary_region": settings.region,
        "kill_signal": "SIGTERM",
        # SIGTERM to SIGKILL: the service's graceful-shutdown window and a margin (Fly allows 300 s).
        "kill_timeout": spec.stop_grace_seconds,
        "build": build,
        "deploy": {"strategy": "rolling", "wait_timeout": f"{health.wait_timeout_seconds}s"},
        "env": dict(spec.env),
        "http_service": {
            "internal_port": spec.port,
            "force_https": True,
            "auto_stop_machines": settings.auto_stop,
            "auto_start_machines": True,
            "min_machines_running": settings.min_machines,
            "processes": ["app"],
            "concurrency": {
                "type": "requests",
                "soft_limit": settings.soft_limit,
                "hard_limit": settings.hard_limit,
            },
            "checks": [
                {
                    "grace_period": f"{health.start_period_seconds}s",
                    "interval": f"{fly.CHECK_INTERVAL_SECONDS}s",
                    "timeout": f"{health.timeout_seconds}s",
                    "method": "GET",
                    "path": HEALTH_PATH,
                }
            ],
        },
        "vm": [
            {
                "cpu_kind": settings.preset.cpu_kind,
                "cpus": settings.preset.cpus,
                "memory_mb": settings.memory_mb,
            }
        ],
    }


# ---- a small TOML writer: tables, arrays of tables, strings, integers, booleans, lists of strings -------


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list) and all(not isinstance(v, dict) for v in value):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _emit(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    """Keys first, then sub-tables; each level indented by two spaces, as flyctl writes it."""
    indent = "  " * len(path)
    for key, value in table.items():
        if not isinstance(value, dict) and not _is_table_array(value):
            lines.append(f"{indent}{_key(key)} = {_value(value)}")
    for key, value in table.items():
        name = ".".join(_key(k) for k in [*path, key])
        items = [value] if isinstance(value, dict) else value if _is_table_array(value) else []
        for item in items:
            lines.append("")
            lines.append(f"{indent}[{name}]" if isinstance(value, dict) else f"{indent}[[{name}]]")
            _emit(item, [*path, key], lines)


def to_toml(document: dict[str, Any]) -> str:
    lines: list[str] = []
    _emit(document, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def render(cfg: StackConfig) -> str:
    settings: fly.Settings = cfg.target_settings
    source = getattr(cfg, "source_name", None) or f"Pulumi.{cfg.stack}.yaml"
    header = HEADER.format(
        source=source, max_machines=settings.max_machines, min_machines=settings.min_machines
    )
    return header + "\n" + to_toml(document(cfg))


def variables(cfg: StackConfig) -> str:
    """The flyctl commands for the secrets (placeholders) and the machine count."""
    spec = build_spec(cfg)
    settings: fly.Settings = cfg.target_settings
    lines = []
    secrets = config_as_code.secret_names(cfg, spec)
    if secrets:
        lines.append("# Secrets: encrypted by Fly, exposed to the machines as environment variables.")
        lines.append(
            f"fly secrets set --app {shlex.quote(settings.app)} --stage "
            + " ".join(f"'{name}=<value>'" for name in secrets)
        )
    lines.append("# Machines the proxy may start (it keeps min_machines_running of them running):")
    lines.append(f"fly scale count {settings.max_machines} --app {shlex.quote(settings.app)} --yes")
    return "\n".join(lines) + "\n"


def generate(stack_file=None) -> str:
    path = stack_file or config_as_code.example_stack_file(fly.NAME)
    return render(config_as_code.load(path, fly.NAME))


def main(argv: list[str] | None = None) -> int:
    return config_as_code.main(argv, target=fly.NAME, output=OUTPUT, render=render, variables=variables)
