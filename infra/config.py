"""The stack settings every target shares: read once into one typed object and validated.

`load()` is what the Pulumi program calls. It reads the stack's configuration through the Pulumi
runtime, checks every value and raises `ConfigError` (a `pulumi.RunError`, so `pulumi preview` prints
the message without a stack trace) listing each problem with the key and the command that fixes it.
Nothing is declared before this succeeds.

This module knows no platform. The `target` setting picks a module from the registry in
`infra/targets/`; that module declares its own keys (`KEYS`) and reads and checks them in its
`parse(r, common)` with the same `_Reader`, so its problems are listed together with these.

`load_stack_file()` parses a `Pulumi.<stack>.yaml` with the same rules, without the Pulumi engine (for
the config-as-code generators and for the Docker integration test). Encrypted `secure:` values cannot
be decrypted there: they count as present, their value is unknown.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pulumi
import yaml

from infra import sizing

PROJECT = "reranker"  # Pulumi.yaml `name`: the config namespace of every key below
REPO_ROOT = Path(__file__).resolve().parent.parent
HEALTH_PATH = "/api/health/"

ENVIRONMENTS = ("development", "production")
DEVICES = ("cpu", "cuda", "auto")
LOG_LEVELS = ("debug", "info", "warning", "error")

_ENCRYPTED = object()  # a `secure:` value read from a stack file: present, but not decryptable here


class ConfigError(pulumi.RunError, ValueError):
    """Invalid stack settings. The message lists every problem, each naming its key and the fix."""

    def __init__(self, problems: list[str], source: str = "the stack configuration") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in {source}:\n{lines}")


class Secret:
    """A secret setting. Its value is never part of a repr, a log line or an error message."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value

    @property
    def known(self) -> bool:
        """False for a `secure:` value read from a stack file without the Pulumi engine."""
        return self._value is not None

    def reveal(self) -> str:
        if self._value is None:
            raise ValueError("this secret is encrypted in the stack file; only `pulumi up` can decrypt it")
        return self._value

    def as_output(self) -> pulumi.Output[str]:
        return pulumi.Output.secret(self.reveal())

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


@dataclass(frozen=True)
class Key:
    """One `reranker:<name>` setting, as documented in the README table and env.template."""

    name: str
    help: str
    secret: bool = False
    env: str | None = None  # the container variable it becomes, for the settings that map 1:1


# The deployment guide's variables: passed to the container unchanged.
GUIDE_KEYS: tuple[Key, ...] = (
    Key("llmApiKey", "API key of the LLM provider", secret=True, env="LLM_API_KEY"),
    Key("llmModelComplex", "LLM model id for complex tasks", env="LLM_MODEL_COMPLEX"),
    Key("llmModelLightweight", "LLM model id for lightweight tasks", env="LLM_MODEL_LIGHTWEIGHT"),
    Key("supabaseUrl", "Supabase project URL", env="SUPABASE_URL"),
    Key("supabaseAnonKey", "Supabase anon (public) API key", secret=True, env="SUPABASE_ANON_KEY"),
    Key("supabaseServiceRoleKey", "Supabase service-role key", secret=True, env="SUPABASE_SERVICE_ROLE_KEY"),
    # Both JWT settings let the service accept Supabase tokens (issue 10): secret env vars on every target.
    Key(
        "supabaseJwtPublicKey",
        "Supabase JWT public key (PEM or JWK)",
        secret=True,
        env="SUPABASE_JWT_PUBLIC_KEY",
    ),
    Key("supabaseJwtSecret", "Supabase JWT secret (HS256)", secret=True, env="SUPABASE_JWT_SECRET"),
)
PROD_REQUIRED_SECRETS = ("llmApiKey", "supabaseAnonKey", "supabaseServiceRoleKey", "supabaseJwtSecret")
# Any one of these lets the service authenticate callers (CONTRACTS.md): production needs one of them.
AUTH_KEYS = ("apiKeys", "supabaseJwtSecret", "supabaseJwtPublicKey")
SCALING_KEYS = ("minInstances", "maxInstances", "targetCpuPercent", "concurrency")

COMMON_KEYS: tuple[Key, ...] = (
    Key("target", "Where the service runs: one of the modules in infra/targets/"),
    Key("environment", "`development` or `production`", env="ENVIRONMENT"),
    Key("imageFlavour", "`torch` (Dockerfile stage runtime) or `onnx` (runtime-onnx, no torch)"),
    Key("memoryMb", "Memory per instance in MB; at least workers x footprint + headroom (infra/sizing.py)"),
    Key("workers", "Uvicorn worker processes per instance", env="WEB_CONCURRENCY"),
    Key("cpus", "CPUs per instance (Docker limit; picks the Render plan, the Cloud Run and Fargate CPU)"),
    Key("port", "Port the service listens on inside the container", env="PORT"),
    Key("minInstances", "Scaling: fewest instances (0 = scale to zero where the platform can)"),
    Key("maxInstances", "Scaling: most instances (above minInstances: autoscaling)"),
    Key("targetCpuPercent", "Scaling: average CPU utilisation the autoscaler aims for"),
    Key("concurrency", "Scaling: concurrent requests one instance takes, where the platform routes by it"),
    Key("corsAllowedOrigins", "Allowed CORS origins (list or comma separated)", env="CORS_ALLOWED_ORIGINS"),
    Key("rerankDevice", "`cpu`, `cuda` or `auto`", env="RERANK_DEVICE"),
    Key("rerankMaxLength", "Tokens per query+document pair (16-8192)", env="RERANK_MAX_LENGTH"),
    Key("logLevel", "`debug`, `info`, `warning` or `error`", env="LOG_LEVEL"),
    Key("readOnlyRootFilesystem", "Run the container with a read-only root filesystem and a scratch /tmp"),
    Key("startPeriodSeconds", "Health-check grace period for model loading and warm-up"),
    Key(
        "shutdownGraceSeconds",
        "Graceful-shutdown window; also each platform's stop grace",
        env="RERANK_SHUTDOWN_GRACE_S",
    ),
    Key(
        "apiKeys",
        "API keys the service accepts as `Authorization: Bearer <key>` (comma separated)",
        secret=True,
        env="RERANK_API_KEYS",
    ),
    Key(
        "jwtAudience",
        "Audience a Supabase JWT must carry (service default `authenticated`)",
        env="RERANK_JWT_AUDIENCE",
    ),
    Key(
        "allowAnonymous",
        "Let production run without authentication (private networks only)",
        env="RERANK_ALLOW_ANONYMOUS",
    ),
    Key("metricsPublic", "Serve /metrics without an API key", env="RERANK_METRICS_PUBLIC"),
    Key("imageName", "Image reference; a registry path where the platform pulls it"),
    Key("buildImage", "Build the image from the Dockerfile (`false`: deploy imageName as is)"),
    Key("imageBuildArgs", "Docker build arguments (map; keys must be ARGs of the Dockerfile)"),
    Key("imagePlatform", "Build platform (default linux/amd64 wherever the image is pushed)"),
    Key("dockerfile", "Dockerfile path, relative to the repository root"),
    Key("registryServer", "Registry host for pushing/pulling (default: imageName's host)"),
    Key("registryUsername", "Registry user name"),
    Key("registryPassword", "Registry password or token", secret=True),
    Key("env", "Extra plain environment variables (map NAME: value)"),
    Key("secretEnv", "Extra secret environment variables: one JSON map set with --secret", secret=True),
    Key(
        "requiredSecrets",
        "Secret keys the stack refuses to deploy without (production default: the guide's keys)",
    ),
    *GUIDE_KEYS,
)
COMMON_KEYS_BY_NAME = {key.name: key for key in COMMON_KEYS}

_SECRET_LOOKING = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|PRIVATE_KEY|CREDENTIAL)")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Variables the typed keys own: `env` may not set them (it would silently fight the typed key).
MANAGED_ENV = {key.env: key.name for key in COMMON_KEYS if key.env}
_SECRET_KEYS = frozenset(key.name for key in COMMON_KEYS if key.secret)


def all_keys() -> tuple[Key, ...]:
    """Every `reranker:*` key: the shared ones, then each registered target's (documented in README)."""
    from infra import targets

    return targets.all_keys()


def keys_by_name() -> dict[str, Key]:
    return {key.name: key for key in all_keys()}


@dataclass(frozen=True)
class RawConfig:
    """A stack's `reranker:*` values as the Pulumi engine hands them to a program: strings
    (numbers and booleans as text, lists and maps as JSON)."""

    stack: str
    values: Mapping[str, Any]  # key (no namespace) -> str, or _ENCRYPTED
    secret_keys: frozenset[str]  # keys (no namespace) stored encrypted
    source: str  # for messages, e.g. "Pulumi.prod.yaml"


@dataclass(frozen=True)
class Scaling:
    """The one scaling block of every target. Each target maps it onto its autoscaler or refuses
    (by key) what it cannot honour; `explicit` names the keys the stack actually sets."""

    min_instances: int = 1
    max_instances: int = 1
    target_cpu_percent: int | None = None
    concurrency: int | None = None
    explicit: frozenset[str] = frozenset()

    @property
    def autoscaling(self) -> bool:
        return self.max_instances > self.min_instances


@dataclass(frozen=True)
class StackConfig:
    """The validated settings of one stack: the shared ones, and the target's own in `target_settings`
    (the object the target module's `parse()` returned)."""

    stack: str
    target: str
    environment: str
    image_flavour: str
    memory_mb: int
    memory_explicit: bool  # False: derived from infra/sizing.py (targets may round it up to their sizes)
    workers: int
    cpus: float | None
    port: int
    scaling: Scaling
    cors_allowed_origins: tuple[str, ...]
    rerank_device: str
    rerank_max_length: int
    log_level: str
    read_only_root_filesystem: bool
    start_period_seconds: int
    shutdown_grace_seconds: int
    image_name: str
    build_image: bool
    image_build_args: Mapping[str, str]
    image_platform: str | None
    dockerfile: Path
    registry_server: str | None
    registry_username: str | None
    registry_password: Secret | None
    plain_env: Mapping[str, str]  # auth settings, guide variables and `env` extras, by variable name
    secret_env: Mapping[str, Secret]  # auth secrets, guide secrets and `secretEnv` extras, by variable name
    required_secrets: tuple[str, ...]
    target_settings: Any = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def pulls_from_registry(self) -> bool:
        """Whether the platform pulls the image from a registry (anything but the local Docker engine)."""
        return bool(getattr(self.target_settings, "pulls_from_registry", True))

    @property
    def pushes_image(self) -> bool:
        """Whether the built image goes to a registry."""
        return self.build_image and self.pulls_from_registry

    @property
    def service_name(self) -> str:
        return getattr(self.target_settings, "service_name", None) or f"{PROJECT}-{self.stack}"

    @property
    def build_target(self) -> str:
        """The Dockerfile stage of the image flavour."""
        return sizing.footprint(self.image_flavour).build_target

    @property
    def required_memory_mb(self) -> int:
        return sizing.required_memory_mb(self.workers, self.image_flavour)

    @property
    def context_dir(self) -> Path:
        return REPO_ROOT


# --------------------------------------------------------------------------------------------------
# Reading


def load() -> StackConfig:
    """Read and validate the current stack's settings through the Pulumi runtime."""
    return parse(raw_from_pulumi())


def load_stack_file(stack: str, path: Path | None = None, *, deploy: bool = True) -> StackConfig:
    """Read and validate `Pulumi.<stack>.yaml` without the Pulumi engine (secure values stay unknown).

    `deploy=False` skips the checks that only matter to `pulumi up` from this machine (ids a dashboard
    asks for, the image-name placeholder, the presence of required secrets, the Dockerfile): config-as-
    code files such as the Render Blueprint are applied from the platform's dashboard, which asks for
    those itself."""
    return parse(raw_from_stack_file(stack, path), deploy=deploy)


def raw_from_pulumi() -> RawConfig:
    from pulumi.runtime import config as runtime_config

    prefix = PROJECT + ":"
    merged: dict[str, Any] = dict(runtime_config.get_config_env())
    merged.update(runtime_config.CONFIG.get())
    secret_full_keys = set(runtime_config.get_config_secret_keys_env()) | set(
        runtime_config._SECRET_KEYS.get()  # noqa: SLF001 - the only place the runtime keeps them
    )
    values = {k[len(prefix) :]: str(v) for k, v in merged.items() if k.startswith(prefix)}
    secrets = frozenset(k[len(prefix) :] for k in secret_full_keys if k.startswith(prefix))
    stack = pulumi.get_stack()
    return RawConfig(stack, values, secrets, f"Pulumi.{stack}.yaml")


EXAMPLES_DIR = REPO_ROOT / "infra" / "examples"  # one example stack per target, to copy to the root


def stack_file(stack: str) -> Path:
    """Pulumi.<stack>.yaml at the repository root, else infra/examples/Pulumi.<stack>.yaml."""
    path = REPO_ROOT / f"Pulumi.{stack}.yaml"
    example = EXAMPLES_DIR / f"Pulumi.{stack}.yaml"
    return example if not path.exists() and example.exists() else path


def raw_from_stack_file(stack: str, path: Path | None = None) -> RawConfig:
    path = path or stack_file(stack)
    document = yaml.safe_load(path.read_text()) or {}
    values: dict[str, Any] = {}
    secrets: set[str] = set()
    for full_key, value in (document.get("config") or {}).items():
        namespace, _, key = str(full_key).partition(":")
        if namespace != PROJECT or not key:
            continue
        if _contains_secure(value):  # `key: {secure: ...}`, or a map holding one
            values[key] = _ENCRYPTED
            secrets.add(key)
        else:
            values[key] = config_string(value)
    return RawConfig(stack, values, frozenset(secrets), path.name)


def config_string(value: Any) -> str:
    """The string the Pulumi engine passes to a program for a YAML config value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _contains_secure(value: Any) -> bool:
    if isinstance(value, dict):
        return set(value) == {"secure"} or any(_contains_secure(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_secure(v) for v in value)
    return False


# --------------------------------------------------------------------------------------------------
# Parsing and validation


class _Reader:
    """Typed getters that record problems instead of stopping at the first one."""

    def __init__(self, raw: RawConfig, *, deploy: bool = True) -> None:
        self.raw = raw
        self.deploy = deploy  # False: reading a stack file for a generator, not for `pulumi up`
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.read: set[str] = set()

    def problem(self, key: str, message: str) -> None:
        """Record `reranker:<key>=<value> ...` or `reranker:<key> ...`."""
        separator = "" if message.startswith("=") else " "
        self.problems.append(f"{PROJECT}:{key}{separator}{message}")

    def has(self, key: str) -> bool:
        """Whether the key is set to something (an encrypted value counts)."""
        value = self.raw.values.get(key)
        return value is _ENCRYPTED or (value is not None and str(value).strip() != "")

    def _text(self, key: str) -> str | None:
        self.read.add(key)
        value = self.raw.values.get(key)
        if value is _ENCRYPTED:
            return None
        if value is None or str(value).strip() == "":
            return None
        return str(value).strip()

    def string(
        self, key: str, default: str | None = None, choices: Iterable[str] | None = None
    ) -> str | None:
        value = self._text(key)
        if value is None:
            return default
        if choices is not None and value not in choices:
            options = ", ".join(choices)
            self.problem(key, f"={value!r} is not one of: {options} (pulumi config set {key} <one of them>)")
            return default
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self._text(key)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            self.problem(key, f"={value!r} is not a whole number (pulumi config set {key} {default})")
            return default
        if not low <= number <= high:
            self.problem(key, f"={number} is out of range {low}..{high} (pulumi config set {key} {default})")
            return default
        return number

    def number(self, key: str, low: float, high: float) -> float | None:
        value = self._text(key)
        if value is None:
            return None
        try:
            number = float(value)
        except ValueError:
            self.problem(key, f"={value!r} is not a number, e.g. 1.5 (pulumi config set {key} 1.5)")
            return None
        if not low < number <= high:
            self.problem(key, f"={number:g} must be above {low:g} and at most {high:g}")
            return None
        return number

    def boolean(self, key: str, default: bool) -> bool:
        value = self._text(key)
        if value is None:
            return default
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        self.problem(
            key, f"={value!r} must be true or false (pulumi config set {key} {str(default).lower()})"
        )
        return default

    def string_list(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self._text(key)
        if value is None:
            return default
        if value.startswith("["):
            try:
                items = json.loads(value)
            except json.JSONDecodeError:
                items = None
            if not isinstance(items, list) or not all(isinstance(i, (str, int, float)) for i in items):
                self.problem(
                    key, f"={value!r} must be a list of strings, e.g. pulumi config set --path '{key}[0]' x"
                )
                return default
            return tuple(str(i).strip() for i in items if str(i).strip())
        return tuple(part.strip() for part in value.split(",") if part.strip())

    def mapping(self, key: str) -> dict[str, str]:
        value = self._text(key)
        if value is None:
            return {}
        try:
            items = json.loads(value)
        except json.JSONDecodeError:
            items = None
        if not isinstance(items, dict) or any(isinstance(v, (dict, list)) for v in items.values()):
            self.problem(key, f"must be a map of NAME: value (pulumi config set --path '{key}.NAME' value)")
            return {}
        return {str(k): config_string(v) for k, v in items.items()}

    def secret(self, key: str) -> Secret | None:
        self.read.add(key)
        value = self.raw.values.get(key)
        if value is None:
            return None
        if key not in self.raw.secret_keys:
            self.problem(
                key,
                f"is stored in plain text in {self.raw.source}; store it encrypted: "
                f"pulumi config set --secret {key} <value>",
            )
            return None
        if value is _ENCRYPTED:
            return Secret(None)
        if str(value).strip() == "":
            return None  # an empty secret counts as missing
        return Secret(str(value))


def parse(raw: RawConfig, *, deploy: bool = True) -> StackConfig:
    """Validate a stack's raw settings, the shared ones here and the target's in its module's `parse()`;
    raise ConfigError listing every problem."""
    from infra import targets

    r = _Reader(raw, deploy=deploy)
    target = r.string("target", targets.DEFAULT_TARGET, targets.names()) or targets.DEFAULT_TARGET
    module = targets.get_target(target)
    _check_unknown_keys(r, target)

    environment = r.string("environment", "development", ENVIRONMENTS) or "development"
    flavour = r.string("imageFlavour", sizing.DEFAULT_FLAVOUR, sizing.FLAVOURS) or sizing.DEFAULT_FLAVOUR
    workers = r.integer("workers", 1, 1, 64)
    memory_explicit = r.has("memoryMb")
    memory_mb = r.integer("memoryMb", sizing.required_memory_mb(workers, flavour), 128, 1024 * 1024)
    cpus = r.number("cpus", 0, 256)
    port = r.integer("port", 8000, 1, 65535)
    scaling = _read_scaling(r)
    cors = r.string_list("corsAllowedOrigins")
    rerank_device = r.string("rerankDevice", "cpu", DEVICES) or "cpu"
    rerank_max_length = r.integer("rerankMaxLength", 512, 16, 8192)
    log_level = r.string("logLevel", "info", LOG_LEVELS) or "info"
    read_only = r.boolean("readOnlyRootFilesystem", True)
    start_period = r.integer("startPeriodSeconds", 120, 5, 3600)
    shutdown_grace = r.integer("shutdownGraceSeconds", 30, 1, 3600)
    build_image = r.boolean("buildImage", True)
    image_name = r.string("imageName", f"{PROJECT}:{raw.stack}") or f"{PROJECT}:{raw.stack}"
    image_build_args = r.mapping("imageBuildArgs")
    image_platform = r.string("imagePlatform")
    dockerfile = REPO_ROOT / (r.string("dockerfile", "Dockerfile") or "Dockerfile")
    registry_server = r.string("registryServer")
    registry_username = r.string("registryUsername")
    registry_password = r.secret("registryPassword")
    extra_env = r.mapping("env")
    secret_env_raw = r.secret("secretEnv")
    required_default = PROD_REQUIRED_SECRETS if environment == "production" else ()
    required_secrets = r.string_list("requiredSecrets", required_default)

    _check_memory(r, memory_mb, workers, flavour)
    if rerank_max_length > sizing.FOOTPRINT_MEASURED_AT_MAX_LENGTH:
        r.warnings.append(
            f"{PROJECT}:rerankMaxLength={rerank_max_length} is above the "
            f"{sizing.FOOTPRINT_MEASURED_AT_MAX_LENGTH} tokens the per-worker footprint was measured at; "
            "re-measure it (infra/sizing.py) before trusting memoryMb"
        )
    if not sizing.footprint(flavour).measured:
        r.warnings.append(
            f"{PROJECT}:imageFlavour={flavour}: its per-worker footprint in infra/sizing.py is provisional "
            "(not yet measured in the image); size memoryMb with margin"
        )
    _check_cors(r, cors)
    _check_registry(r, registry_username, r.has("registryPassword"))
    if build_image:
        if deploy:
            _check_dockerfile(
                r, dockerfile, image_build_args, sizing.footprint(flavour).build_target, flavour
            )
    elif image_build_args:
        r.problem("imageBuildArgs", "is set but buildImage=false, so nothing is built; remove one of them")

    auth_plain, auth_secret = _read_auth(r, environment, deploy, required_secrets)
    guide_plain, guide_secret = _read_guide_keys(r)
    secret_env = {**auth_secret, **guide_secret}
    if secret_env_raw is not None:
        secret_env.update(_parse_secret_env(r, secret_env_raw))
    _check_required_secrets(r, required_secrets, raw, deploy)

    plain_env = {**auth_plain, **guide_plain, **_check_extra_env(r, extra_env, secret_env)}
    typed_env = {
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "ENVIRONMENT": environment,
        "RERANK_DEVICE": rerank_device,
        "RERANK_MAX_LENGTH": str(rerank_max_length),
        "LOG_LEVEL": log_level,
        "RERANK_SHUTDOWN_GRACE_S": str(shutdown_grace),
        **auth_plain,
    }
    if any(r.has(key) for key in AUTH_KEYS):
        # The credentials are secrets (unknown here) and checked above; the service's own production
        # check must not fail for lack of them.
        typed_env["RERANK_ALLOW_ANONYMOUS"] = "true"
    _check_service_accepts(r, extra_env, typed_env)

    common = StackConfig(
        stack=raw.stack,
        target=target,
        environment=environment,
        image_flavour=flavour,
        memory_mb=memory_mb,
        memory_explicit=memory_explicit,
        workers=workers,
        cpus=cpus,
        port=port,
        scaling=scaling,
        cors_allowed_origins=cors,
        rerank_device=rerank_device,
        rerank_max_length=rerank_max_length,
        log_level=log_level,
        read_only_root_filesystem=read_only,
        start_period_seconds=start_period,
        shutdown_grace_seconds=shutdown_grace,
        image_name=image_name,
        build_image=build_image,
        image_build_args=dict(sorted(image_build_args.items())),
        image_platform=image_platform,
        dockerfile=dockerfile,
        registry_server=registry_server or registry_host(image_name),
        registry_username=registry_username,
        registry_password=registry_password,
        plain_env=dict(sorted(plain_env.items())),
        secret_env=dict(sorted(secret_env.items())),
        required_secrets=required_secrets,
    )
    settings = module.parse(r, common)

    unread = {key.name for key in (*COMMON_KEYS, *module.KEYS)} - r.read
    assert not unread, f"keys declared but never parsed: {sorted(unread)}"
    if r.problems:
        raise ConfigError(r.problems, raw.source)
    cfg = dataclasses.replace(common, target_settings=settings, warnings=tuple(r.warnings))
    grace = getattr(settings, "shutdown_grace_seconds", None)  # a platform with a shorter stop window
    if grace is not None and grace != cfg.shutdown_grace_seconds:
        cfg = dataclasses.replace(cfg, shutdown_grace_seconds=grace)
    if cfg.image_platform is None and cfg.pushes_image:
        cfg = dataclasses.replace(cfg, image_platform="linux/amd64")  # what the platforms run
    return cfg


def _check_unknown_keys(r: _Reader, target: str) -> None:
    from infra import targets

    owners = targets.key_owners()
    retired = targets.retired_keys()
    own = {key.name for key in COMMON_KEYS} | {key.name for key in targets.get_target(target).KEYS}
    for key in sorted(r.raw.values):
        if key in own:
            continue
        if key in retired:
            r.problem(
                key,
                f"was retired; use {retired[key][1]}: pulumi config rm {key}",
            )
            continue
        if key in owners:
            r.problem(
                key,
                f"is a setting of target {' / '.join(sorted(owners[key]))}, but this stack's target is "
                f"{target}; remove it: pulumi config rm {key}",
            )
            continue
        close = difflib.get_close_matches(key, list(own), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        r.problem(
            key,
            f"is not a setting of this project; {hint}remove it with: pulumi config rm {key} "
            '(settings: the "Stack settings" table in README.md)',
        )


def _read_scaling(r: _Reader) -> Scaling:
    explicit = frozenset(key for key in SCALING_KEYS if r.has(key))
    low = r.integer("minInstances", 1, 0, 1000)
    high = r.integer("maxInstances", max(low, 1), 1, 1000)
    cpu_target = r.integer("targetCpuPercent", 0, 1, 100) if r.has("targetCpuPercent") else None
    concurrency = r.integer("concurrency", 0, 1, 1000) if r.has("concurrency") else None
    r.read.update(("targetCpuPercent", "concurrency"))
    if high < low:
        r.problem(
            "maxInstances",
            f"={high} is below minInstances={low}; pulumi config set maxInstances {max(low, 1)}",
        )
        high = max(low, 1)
    if cpu_target == 0 or concurrency == 0:  # out of range, already reported
        cpu_target = cpu_target or None
        concurrency = concurrency or None
    if cpu_target is not None and high <= low:
        r.problem(
            "targetCpuPercent",
            f"={cpu_target} has nothing to scale: maxInstances={high} is not above minInstances={low}; "
            f"set a higher maximum (pulumi config set maxInstances {low + 2}) "
            "or remove it (pulumi config rm targetCpuPercent)",
        )
    return Scaling(low, high, cpu_target, concurrency, explicit)


def refuse_scaling(r: _Reader, scaling: Scaling, keys: Iterable[str], reason: str) -> None:
    """For targets: report each of `keys` the stack sets as something this platform cannot honour."""
    for key in keys:
        if key in scaling.explicit:
            r.problem(key, f"cannot be honoured: {reason}; remove it (pulumi config rm {key})")


def check_size(
    r: _Reader,
    key: str,
    cfg: StackConfig,
    sizes: Iterable[sizing.S],
    *,
    platform: str,
    forced: sizing.S | None = None,
    cpus: float | None = None,
) -> sizing.S | None:
    """For targets with a size table: the smallest size that holds memoryMb (and `cpus`), or the forced
    one if it can; otherwise record a problem naming the smallest size that fits."""
    sizes = list(sizes)
    needed = cfg.required_memory_mb
    fp = sizing.footprint(cfg.image_flavour)
    if forced is not None:
        if forced.memory_mb < needed:
            fitting = sizing.smallest_fitting(sizes, needed, cpus)
            fix = f"use {fitting.name} (pulumi config set {key} {fitting.name})" if fitting else ""
            r.problem(
                key,
                f"={forced.name} ({forced.memory_mb} MB) cannot hold {cfg.workers} worker(s) x "
                f"{fp.worker_mb} MB + {fp.headroom_mb} MB headroom = {needed} MB; {fix}",
            )
        elif cfg.memory_explicit and forced.memory_mb < cfg.memory_mb:
            r.problem(
                key,
                f"={forced.name} has {forced.memory_mb} MB, less than memoryMb={cfg.memory_mb}; lower memoryMb "
                f"(pulumi config set memoryMb {forced.memory_mb}) or remove {key} (pulumi config rm {key})",
            )
        if cpus is not None and forced.cpus < cpus:
            r.problem("cpus", f"={cpus:g} is more than {key}={forced.name} offers ({forced.cpus:g} CPU)")
        return forced
    found = sizing.smallest_fitting(sizes, cfg.memory_mb, cpus)
    if found is None:
        largest = sizes[-1]
        r.problem(
            "memoryMb",
            f"={cfg.memory_mb}{f' with cpus={cpus:g}' if cpus else ''} does not fit the largest supported "
            f"{platform} {largest.name} ({largest.memory_mb} MB, {largest.cpus:g} CPU); lower memoryMb "
            f"(pulumi config set memoryMb {largest.memory_mb}) or workers",
        )
    return found


def _check_memory(r: _Reader, memory_mb: int, workers: int, flavour: str) -> None:
    needed = sizing.required_memory_mb(workers, flavour)
    if memory_mb >= needed:
        return
    fits = sizing.max_workers_for(memory_mb, flavour)
    alternative = f", or lower workers to {fits} (pulumi config set workers {fits})" if fits >= 1 else ""
    if flavour != "onnx" and memory_mb >= sizing.required_memory_mb(workers, "onnx"):
        alternative += " (the onnx image flavour fits: pulumi config set imageFlavour onnx)"
    r.problem(
        "memoryMb",
        f"={memory_mb} is too small for {sizing.need_text(workers, flavour)}; set memoryMb >= {needed} "
        f"(pulumi config set memoryMb {needed}){alternative}",
    )


def _read_auth(
    r: _Reader, environment: str, deploy: bool, required: tuple[str, ...]
) -> tuple[dict[str, str], dict[str, Secret]]:
    """Issue 10's settings: API keys and the JWT audience, anonymous access, public metrics."""
    plain: dict[str, str] = {}
    secret: dict[str, Secret] = {}
    api_keys = r.secret("apiKeys")
    if api_keys is not None:
        if api_keys.known and not [k for k in api_keys.reveal().split(",") if k.strip()]:
            r.problem("apiKeys", "holds no key; pulumi config set --secret apiKeys <key1>,<key2>")
        else:
            secret["RERANK_API_KEYS"] = api_keys
    audience = r.string("jwtAudience")
    if audience is not None:
        plain["RERANK_JWT_AUDIENCE"] = audience
    allow_anonymous = r.boolean("allowAnonymous", False)
    if r.has("allowAnonymous"):
        plain["RERANK_ALLOW_ANONYMOUS"] = str(allow_anonymous).lower()
    metrics_public = r.boolean("metricsPublic", False)
    if r.has("metricsPublic"):
        plain["RERANK_METRICS_PUBLIC"] = str(metrics_public).lower()
    authenticated = any(r.has(key) for key in AUTH_KEYS)
    required_auth = any(key in required for key in AUTH_KEYS)  # then its own "required" problem says it
    if (
        environment == "production"
        and deploy
        and not authenticated
        and not allow_anonymous
        and not required_auth
    ):
        r.problem(
            "apiKeys",
            "is not set, nor supabaseJwtSecret or supabaseJwtPublicKey: environment=production refuses to "
            "deploy a service anyone can call; pulumi config set --secret apiKeys <key1>,<key2> "
            "(or set a JWT key), or, on a private network only, pulumi config set allowAnonymous true",
        )
    return plain, secret


def _check_cors(r: _Reader, origins: tuple[str, ...]) -> None:
    for origin in origins:
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
            trimmed = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None
            hint = f"; use {trimmed!r}" if trimmed else ""
            r.problem(
                "corsAllowedOrigins",
                f"entry {origin!r} is not an origin (scheme://host[:port], no path or trailing slash){hint}",
            )


def registry_host(image_name: str) -> str | None:
    """The registry host of an image reference (None for a bare local name like `reranker:dev`)."""
    first, sep, _ = image_name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io" if sep else None


def check_registry_image(r: _Reader, image_name: str, puller: str, deploy: bool) -> None:
    if registry_host(image_name) is None:
        r.problem(
            "imageName",
            f"={image_name!r} is a local name, but {puller} pulls the image from a registry; "
            "use a registry path (pulumi config set imageName ghcr.io/<you>/reranker:latest)",
        )
    elif "OWNER" in image_name and deploy:
        r.problem(
            "imageName",
            f"={image_name!r} still has the OWNER placeholder; "
            "pulumi config set imageName ghcr.io/<your user or org>/reranker:latest",
        )


def _check_registry(r: _Reader, username: str | None, has_password: bool) -> None:
    if username is not None and not has_password:
        r.problem(
            "registryPassword",
            "is needed with registryUsername (pulumi config set --secret registryPassword <token>)",
        )
    if has_password and username is None:
        r.problem(
            "registryUsername", "is needed with registryPassword (pulumi config set registryUsername <user>)"
        )


_ARG_LINE = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE | re.MULTILINE)


def dockerfile_args(dockerfile: Path) -> set[str]:
    """The build arguments a Dockerfile declares (`ARG NAME[=default]`)."""
    return set(_ARG_LINE.findall(dockerfile.read_text()))


_STAGE_LINE = re.compile(r"^\s*FROM\s+\S+\s+AS\s+([A-Za-z0-9_.-]+)", re.IGNORECASE | re.MULTILINE)


def dockerfile_stages(dockerfile: Path) -> list[str]:
    """The named build stages of a Dockerfile (`FROM ... AS name`), in order."""
    return _STAGE_LINE.findall(dockerfile.read_text())


def _check_dockerfile(
    r: _Reader, dockerfile: Path, build_args: Mapping[str, str], stage: str, flavour: str
) -> None:
    if not dockerfile.is_file():
        r.problem(
            "dockerfile",
            f"points at {dockerfile}, which does not exist; restore the Dockerfile, or deploy a pushed image "
            "(pulumi config set buildImage false; pulumi config set imageName <registry path>)",
        )
        return
    declared = dockerfile_args(dockerfile)
    for name in sorted(set(build_args) - declared):
        r.problem(
            f"imageBuildArgs.{name}",
            f"is not an ARG of {dockerfile.name} (it declares: {', '.join(sorted(declared)) or 'none'}); "
            f"remove it: pulumi config rm --path 'imageBuildArgs.{name}'",
        )
    stages = dockerfile_stages(dockerfile)
    if stage not in stages:
        r.problem(
            "imageFlavour",
            f"={flavour} builds the Dockerfile stage {stage!r}, which {dockerfile.name} does not define "
            f"(its stages: {', '.join(stages) or 'none'}); pick another flavour "
            f"(pulumi config set imageFlavour {sizing.DEFAULT_FLAVOUR}) or deploy a pushed image "
            "(pulumi config set buildImage false)",
        )


def _read_guide_keys(r: _Reader) -> tuple[dict[str, str], dict[str, Secret]]:
    plain: dict[str, str] = {}
    secret: dict[str, Secret] = {}
    for key in GUIDE_KEYS:
        assert key.env is not None
        if key.secret or key.name in r.raw.secret_keys:
            value = r.secret(key.name)
            if value is not None:
                secret[key.env] = value
        else:
            text = r.string(key.name)
            if text is not None:
                plain[key.env] = text
    return plain, secret


def _parse_secret_env(r: _Reader, value: Secret) -> dict[str, Secret]:
    if not value.known:
        return {}  # encrypted in a stack file: the names are not readable without the engine
    try:
        items = json.loads(value.reveal())
    except json.JSONDecodeError:
        items = None
    if not isinstance(items, dict):
        r.problem(
            "secretEnv", """must be a JSON map (pulumi config set --secret secretEnv '{"NAME": "value"}')"""
        )
        return {}
    result = {}
    for name, item in items.items():
        if not _ENV_NAME.match(name):
            r.problem(f"secretEnv.{name}", "is not a valid environment variable name")
        elif name in MANAGED_ENV:
            r.problem(
                f"secretEnv.{name}", f"is set by the typed key {MANAGED_ENV[name]}; set that key instead"
            )
        else:
            result[name] = Secret(config_string(item))
    return result


def _check_required_secrets(r: _Reader, required: tuple[str, ...], raw: RawConfig, deploy: bool) -> None:
    for key in required:
        if key not in _SECRET_KEYS or key == "secretEnv":
            secrets = ", ".join(k.name for k in COMMON_KEYS if k.secret and k.name != "secretEnv")
            r.problem(
                "requiredSecrets", f"lists {key!r}, which is not a secret setting (choose from: {secrets})"
            )
            continue
        value = raw.values.get(key)
        if deploy and (value is None or (value is not _ENCRYPTED and str(value).strip() == "")):
            env = COMMON_KEYS_BY_NAME[key].env or key
            r.problem(
                key,
                f"({env}) is required by stack {raw.stack} but not set; "
                f"pulumi config set --secret {key} <value>",
            )


def _check_extra_env(
    r: _Reader, extra: Mapping[str, str], secret_env: Mapping[str, Secret]
) -> dict[str, str]:
    accepted = {}
    for name, value in extra.items():
        where = f"env.{name}"
        if not _ENV_NAME.match(name):
            r.problem(where, "is not a valid environment variable name (letters, digits, underscore)")
        elif name in MANAGED_ENV:
            key = MANAGED_ENV[name]
            r.problem(where, f"is set by the typed key {key}; pulumi config set {key} {value}")
        elif name in secret_env:
            r.problem(where, "is also set as a secret; remove one of them")
        elif _SECRET_LOOKING.search(name.upper()):
            r.problem(
                where,
                "looks like a secret but `env` is stored in plain text; move it into the secret map: "
                f"pulumi config rm --path 'env.{name}'; pulumi config set --secret secretEnv "
                f'\'{{"{name}": "<value>"}}\'',
            )
        else:
            accepted[name] = value
    return accepted


def _check_service_accepts(r: _Reader, extra: Mapping[str, str], typed: Mapping[str, str]) -> None:
    """Validate the variables the service reads with the service's own settings model."""
    try:
        from pydantic import ValidationError

        from service.settings import Settings
    except ImportError:  # the infra tools used without the service code next to them
        return

    class _FromValuesOnly(Settings):
        """The service's settings, fed only the given values (no process environment, no .env)."""

        @classmethod
        def settings_customise_sources(  # type: ignore[override]
            cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        ):
            return (init_settings,)

    values = {**typed, **{k: v for k, v in extra.items() if _ENV_NAME.match(k)}}
    # Whether authentication is configured is this program's own rule (checked with the stack keys' names, and
    # only where secrets can be seen); secret values are never fed here, so the service must not judge it.
    checked = {**values, "RERANK_ALLOW_ANONYMOUS": "true"}
    try:
        _FromValuesOnly(**checked)
    except ValidationError as exc:
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            if not error.get("loc"):  # a rule across variables: its message names them
                r.problems.append(f"the service would refuse these settings: {message}")
                continue
            name = str(error["loc"][0])
            where = MANAGED_ENV.get(name) or f"env.{name}"
            r.problem(where, f"={values.get(name)!r} is not accepted by the service ({name}): {message}")


def __getattr__(name: str) -> Any:
    """`KEYS` / `KEYS_BY_NAME` / `SECRET_KEYS`: every key, the shared ones and each target's (computed on
    use, since the targets' modules import this one)."""
    if name == "KEYS":
        return all_keys()
    if name == "KEYS_BY_NAME":
        return keys_by_name()
    if name == "SECRET_KEYS":
        return frozenset(key.name for key in all_keys() if key.secret)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
