"""The service's settings: every environment variable it reads, typed and validated in one place."""

from __future__ import annotations

import os
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.hub import HubTimeouts

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_ID = "jinaai/jina-reranker-v1-tiny-en"


class Environment(str, Enum):
    development = "development"
    production = "production"


class Settings(BaseSettings):
    """Read from the environment (and a `.env` file in the working directory, if any)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    rerank_model: str = Field(DEFAULT_MODEL_ID, alias="RERANK_MODEL", description="Hugging Face model id")
    rerank_model_path: str | None = Field(
        None,
        alias="RERANK_MODEL_PATH",
        description="Local model directory; wins over RERANK_MODEL. Relative paths resolve against the project root.",
    )
    rerank_model_revision: str | None = Field(None, alias="RERANK_MODEL_REVISION")
    rerank_device: Literal["cpu", "cuda", "auto"] = Field("cpu", alias="RERANK_DEVICE")
    rerank_max_length: int = Field(512, alias="RERANK_MAX_LENGTH", ge=16, le=8192)
    rerank_max_documents: int = Field(1000, alias="RERANK_MAX_DOCUMENTS", ge=1)
    rerank_max_body_bytes: int = Field(2 * 1024 * 1024, alias="RERANK_MAX_BODY_BYTES", ge=1024)
    # Inference engine (see service/engine and benchmarks/RESULTS.md for why these defaults).
    rerank_batch_tokens: int | None = Field(
        None, alias="RERANK_BATCH_TOKENS", ge=512,
        description="Padded tokens per forward pass; default by backend and precision "
                    "(service.engine.factory.DEFAULT_BATCH_TOKENS): torch fp32 1024, torch bf16 1024, "
                    "ONNX Runtime 2048")
    rerank_max_wait_ms: float = Field(2.0, alias="RERANK_MAX_WAIT_MS", ge=0, le=1000,
                                      description="How long a forward pass waits for more requests to join it")
    rerank_precision: Literal["auto", "fp32", "bf16", "int8"] = Field("auto", alias="RERANK_PRECISION")
    rerank_backend: Literal["auto", "torch", "onnx"] = Field("auto", alias="RERANK_BACKEND")
    rerank_linear: Literal["auto", "onednn", "aten"] = Field(
        "auto", alias="RERANK_LINEAR",
        description="torch backend's Linear layers: onednn (weights packed once for oneDNN, verified at warm-up; "
                    "service/backends/packed_linear.py), aten (torch's default GEMM); auto: onednn on x86-64")
    rerank_implementation: Literal["auto", "native", "remote-code"] = Field(
        "auto", alias="RERANK_IMPLEMENTATION",
        description="torch flavour: native (JinaBERT in plain torch, no transformers import; only where the model "
                    "folder's native.json passed, service/native_gate.py), remote-code (transformers and the model's "
                    "own code); auto: native where it passed and reproduces its probe, remote code otherwise")
    rerank_flavour: Literal["auto", "torch", "onnx"] = Field(
        "auto", alias="RERANK_FLAVOUR",
        description="torch (CrossEncoder) or onnx (ONNX Runtime + tokenizers, never imports torch); "
                    "auto: onnx when torch is not installed (the runtime-onnx image)")
    rerank_threads: int | None = Field(None, alias="RERANK_THREADS", ge=1,
                                       description="Intra-op threads per worker; default: cores / workers")
    hf_home: str | None = Field(None, alias="HF_HOME")
    # huggingface_hub's own variables (it reads them too); here so every Hub wait is bounded, .env included.
    hf_hub_etag_timeout: int = Field(10, alias="HF_HUB_ETAG_TIMEOUT", ge=1, le=3600,
                                     description="Seconds to wait for the Hub to answer a metadata request")
    hf_hub_download_timeout: int = Field(10, alias="HF_HUB_DOWNLOAD_TIMEOUT", ge=1, le=3600,
                                         description="Seconds to wait for the next bytes of a file download")
    environment: Environment = Field(Environment.development, alias="ENVIRONMENT")
    cors_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="CORS_ALLOWED_ORIGINS"
    )
    port: int = Field(8000, alias="PORT", ge=1, le=65535)
    host: str = Field("0.0.0.0", alias="HOST")
    web_concurrency: int = Field(1, alias="WEB_CONCURRENCY", ge=1, le=64)
    prometheus_multiproc_dir: str | None = Field(
        None, alias="PROMETHEUS_MULTIPROC_DIR",
        description="Set by `python -m service` when WEB_CONCURRENCY > 1 so /metrics aggregates workers")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", alias="LOG_LEVEL")
    # Access (service/credentials.py, docs/SECURITY.md). Secrets are SecretStr: never in a repr or a log line.
    rerank_api_keys: SecretStr | None = Field(None, alias="RERANK_API_KEYS",
                                              description="Comma-separated API keys (Authorization: Bearer <key>)")
    supabase_jwt_secret: SecretStr | None = Field(None, alias="SUPABASE_JWT_SECRET")
    supabase_jwt_public_key: SecretStr | None = Field(None, alias="SUPABASE_JWT_PUBLIC_KEY")
    rerank_jwt_audience: str = Field("authenticated", alias="RERANK_JWT_AUDIENCE", min_length=1)
    rerank_allow_anonymous: bool = Field(False, alias="RERANK_ALLOW_ANONYMOUS")
    rerank_metrics_public: bool = Field(False, alias="RERANK_METRICS_PUBLIC")
    # Overload (service/engine/scheduler.py). 60,000 tokens: this service's measured throughput on the
    # 2-core benchmark machine is 5,928 tokens/s (benchmarks/RESULTS.md, W3), so a full queue drains in ~10 s.
    rerank_max_queued_tokens: int = Field(60_000, alias="RERANK_MAX_QUEUED_TOKENS", ge=1)
    rerank_request_timeout_s: float = Field(30.0, alias="RERANK_REQUEST_TIMEOUT_S", gt=0, le=3600)
    rerank_shutdown_grace_s: int = Field(30, alias="RERANK_SHUTDOWN_GRACE_S", ge=0, le=3600)
    rerank_watchdog_s: float = Field(30.0, alias="RERANK_WATCHDOG_S", gt=0, le=3600,
                                     description="Health turns 503 after this long without inference progress "
                                                 "while requests wait")

    @field_validator("cors_allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("rerank_model_path", "hf_home", "rerank_api_keys", "supabase_jwt_secret",
                     "supabase_jwt_public_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _backend_precision_fit(self) -> Settings:
        # Checked here, at startup, rather than when the model loads in the background.
        if self.rerank_precision == "int8" and (self.rerank_backend == "torch" or self.rerank_device != "cpu"):
            raise ValueError("RERANK_PRECISION=int8 runs onnx/model_quantized.onnx with ONNX Runtime: it needs "
                             "RERANK_BACKEND=onnx (or auto) and RERANK_DEVICE=cpu")
        if self.rerank_flavour == "onnx" and (self.rerank_backend == "torch" or self.rerank_precision == "bf16"):
            raise ValueError("RERANK_FLAVOUR=onnx serves ONNX Runtime only (the runtime-onnx image has no torch): "
                             "use RERANK_BACKEND=onnx or auto and RERANK_PRECISION=fp32, int8 or auto")
        if self.rerank_precision == "bf16" and self.rerank_backend == "onnx":
            raise ValueError("RERANK_PRECISION=bf16 is a torch option: use RERANK_BACKEND=torch, or fp32/int8 "
                             "with RERANK_BACKEND=onnx")
        return self

    @model_validator(mode="after")
    def _access_fits_the_environment(self) -> Settings:
        if self.supabase_jwt_public_key is not None:
            from service.credentials import load_public_keys

            load_public_keys(self.supabase_jwt_public_key.get_secret_value())  # names the variable if unusable
        if self.rerank_api_keys is not None and not self.api_keys:
            raise ValueError("RERANK_API_KEYS holds no key: give one or more keys, comma separated, or unset it")
        if self.is_production and not self.auth_configured and not self.rerank_allow_anonymous:
            raise ValueError("ENVIRONMENT=production refuses to start without authentication: set RERANK_API_KEYS "
                             "(or SUPABASE_JWT_SECRET / SUPABASE_JWT_PUBLIC_KEY), or RERANK_ALLOW_ANONYMOUS=true "
                             "to serve without it on a private network")
        if self.is_production and "*" in self.cors_allowed_origins:
            raise ValueError("CORS_ALLOWED_ORIGINS=* is refused in production: list the allowed origins")
        return self

    @property
    def api_keys(self) -> tuple[str, ...]:
        raw = self.rerank_api_keys.get_secret_value() if self.rerank_api_keys else ""
        return tuple(key.strip() for key in raw.split(",") if key.strip())

    @property
    def auth_configured(self) -> bool:
        return bool(self.api_keys) or self.supabase_jwt_secret is not None or self.supabase_jwt_public_key is not None

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.production

    @cached_property
    def model_path(self) -> Path | None:
        """RERANK_MODEL_PATH as an absolute path (forward slashes work on every OS)."""
        if not self.rerank_model_path:
            return None
        path = Path(self.rerank_model_path.replace("\\", "/")).expanduser()
        return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()

    @property
    def hub_timeouts(self) -> HubTimeouts:
        return HubTimeouts(metadata=self.hf_hub_etag_timeout, download=self.hf_hub_download_timeout)

    @property
    def model_display_name(self) -> str:
        return str(self.model_path) if self.model_path else self.rerank_model


class SettingsError(RuntimeError):
    """Raised with a message naming the offending variable and what it accepts."""


# Their values never appear in an error message.
SECRET_VARIABLES = frozenset({"RERANK_API_KEYS", "SUPABASE_JWT_SECRET", "SUPABASE_JWT_PUBLIC_KEY"})


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            message = str(err["msg"]).removeprefix("Value error, ")
            if err["loc"]:
                name = ".".join(str(part) for part in err["loc"])
                shown = "<secret>" if name in SECRET_VARIABLES else repr(err.get("input"))
                problems.append(f"{name}={shown}: {message}")
            else:  # a rule across variables: the message names them
                problems.append(message)
        raise SettingsError("Invalid configuration: " + "; ".join(problems)) from None


def cpu_count_available(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: cgroup quota (containers) and affinity aware."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        count = max(1, min(count, int(quota + 0.999)))
    return count


def _cgroup_cpu_quota(root: Path) -> float | None:
    v2 = root / "cpu.max"
    try:
        if v2.exists():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1_quota = root / "cpu" / "cpu.cfs_quota_us"
        v1_period = root / "cpu" / "cpu.cfs_period_us"
        if v1_quota.exists() and v1_period.exists():
            quota_us = int(v1_quota.read_text())
            return None if quota_us <= 0 else quota_us / int(v1_period.read_text())
    except (OSError, ValueError):
        return None
    return None
