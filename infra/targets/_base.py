"""What every target's deployment has: the stack outputs the program exports, set once at the end."""

from __future__ import annotations

import re
from typing import Any

import pulumi

from infra.config import HEALTH_PATH


class Deployment(pulumi.ComponentResource):
    """A target's component. Subclasses declare their resources, set `image_name` / `image_digest`, then
    call `finish(url, ...)`."""

    url: pulumi.Output[str]
    health_url: pulumi.Output[str]
    image_name: pulumi.Output[str]
    image_digest: pulumi.Output[str]
    extra_outputs: dict[str, Any]

    def finish(self, url: pulumi.Output[str], extra_outputs: dict[str, Any] | None = None) -> None:
        """Set `url` (no trailing slash), `health_url` (the service's health route under it), the target's
        further stack outputs, and register the outputs of the component."""
        self.url = url.apply(lambda value: value.rstrip("/") if isinstance(value, str) else value)
        self.health_url = self.url.apply(lambda value: f"{value}{HEALTH_PATH}" if value else None)
        self.extra_outputs = dict(extra_outputs or {})
        self.register_outputs(
            {
                "url": self.url,
                "healthUrl": self.health_url,
                "imageName": self.image_name,
                "imageDigest": self.image_digest,
            }
        )


def dns_label(text: str, max_length: int = 63) -> str:
    """`text` as a lower-case DNS label (letters, digits, hyphens; starts with a letter): the form Cloud Run
    service names, service account ids and ECR repository names take. Stack names may hold more."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not label or not label[0].isalpha():
        label = f"r-{label}"
    return label[:max_length].rstrip("-")


def check_stop_grace(r: Any, common: Any, platform_limit: int, waits: str) -> None:
    """For targets: refuse a shutdownGraceSeconds longer than the platform can wait after SIGTERM (it is
    told to wait the grace plus the stop margin); `waits` names the platform's setting."""
    from infra.spec import STOP_MARGIN_SECONDS

    limit = platform_limit - STOP_MARGIN_SECONDS
    if common.shutdown_grace_seconds > limit:
        r.problem(
            "shutdownGraceSeconds",
            f"={common.shutdown_grace_seconds}: {waits} at most {platform_limit} s after SIGTERM and the "
            f"service needs {STOP_MARGIN_SECONDS} s more than its grace; "
            f"pulumi config set shutdownGraceSeconds {limit}",
        )
