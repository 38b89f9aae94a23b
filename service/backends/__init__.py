"""Backends run a padded batch through the model and return logits. They never see HTTP."""

from service.backends.base import Backend

__all__ = ["Backend"]
