"""Settings that several targets read with the same meaning (each lists them in its own KEYS)."""

from infra.config import Key

PUBLIC = Key(
    "public",
    "Expose the service on the internet (cloudrun: allUsers may invoke; ecs: an internet-facing load "
    "balancer); false keeps it inside the platform's network or behind its credentials",
)
DELETION_PROTECTION = Key(
    "deletionProtection",
    "Refuse to delete the service's long-lived resources on `pulumi destroy` (cloudrun: the service; "
    "ecs: the load balancer and the image repository)",
)
