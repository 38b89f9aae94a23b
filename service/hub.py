"""Talking to the Hugging Face Hub with every wait bounded and announced.

huggingface_hub leaves some requests without any timeout (`snapshot_download`'s first call, `repo_info`),
so a Hub endpoint that accepts connections and never answers (a proxy or VPN that black-holes traffic)
hangs forever; and `hf_hub_download` retries a refused connection five times over 23 s. Here:

* `bound_waits(timeouts)`: every request of huggingface_hub (and of transformers, which goes through it)
  gets a timeout: HF_HUB_ETAG_TIMEOUT for metadata and any request that had none, HF_HUB_DOWNLOAD_TIMEOUT
  for file transfers (huggingface_hub's own variables, read once by `service.settings`).
* `check_reachable(model_id, revision, timeouts)`: one request, no retries, announced first ("Asking the
  Hugging Face Hub at ... (waiting at most N s)"). If the Hub cannot be reached, this process goes offline:
  what is in the Hugging Face cache is used at once, and nothing else waits on the network.
* `unreachable_message(...)`: the one message for "the Hub could not be reached" (which endpoint, why, and
  the ways out), shared by the service and the download scripts.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("service.hub")

LOCAL_SAVE_COMMAND = "python scripts/download_reranker_local.py --model {model} --output-dir DIR"


@dataclass(frozen=True)
class HubTimeouts:
    """Seconds to wait for one answer of the Hub: metadata (HF_HUB_ETAG_TIMEOUT), file data
    (HF_HUB_DOWNLOAD_TIMEOUT). huggingface_hub's defaults are 10 s each."""

    metadata: int = 10
    download: int = 10


@dataclass(frozen=True)
class Unreachable:
    endpoint: str
    reason: str


# The first failure of this process to reach the Hub (None: not tried, or it answered).
_unreachable: Unreachable | None = None
_answered: set[str] = set()  # endpoints that answered: not asked again by this process
_bounded: HubTimeouts | None = None


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def unreachable() -> Unreachable | None:
    """Why this process found the Hub unreachable, if it did."""
    return _unreachable


def bound_waits(timeouts: HubTimeouts) -> None:
    """Give every request huggingface_hub makes from now on a timeout."""
    global _bounded
    from huggingface_hub import configure_http_backend, constants

    constants.HF_HUB_ETAG_TIMEOUT = timeouts.metadata
    constants.HF_HUB_DOWNLOAD_TIMEOUT = timeouts.download
    if _bounded != timeouts:  # (re)configuring drops the sessions' connection pools: only when it changes
        configure_http_backend(_bounded_session_factory(timeouts.metadata))
        _bounded = timeouts


def _bounded_session_factory(default_timeout: float) -> Callable[[], Any]:
    from huggingface_hub.utils import _http

    make_session = getattr(_http, "_default_backend_factory", None)

    def factory():
        import requests

        session = make_session() if make_session is not None else requests.Session()
        send = session.request

        def request(method: str, url: str, *args: Any, **kwargs: Any):
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = default_timeout
            return send(method, url, *args, **kwargs)

        session.request = request  # type: ignore[method-assign]
        return session

    return factory


def is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def go_offline() -> None:
    """No more network for this process and its children: the libraries read their offline switch once, at
    import; set it for any child and flip the already-imported constants."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    if (constants := sys.modules.get("huggingface_hub.constants")) is not None:
        constants.HF_HUB_OFFLINE = True
    if (hub := sys.modules.get("transformers.utils.hub")) is not None:
        hub._is_offline_mode = True
    if "huggingface_hub.utils._http" in sys.modules:
        from huggingface_hub.utils import reset_sessions

        reset_sessions()  # new sessions refuse every request at once (OfflineAdapter)


def check_reachable(model_id: str, revision: str | None, timeouts: HubTimeouts) -> bool:
    """Ask the Hub about `model_id` once (no retries), saying first what we wait for and for how long.

    True: it answered (a 401/403/404 is an answer: what follows reports it, or finds the model in the cache).
    False: it could not be reached (refused, timed out, 5xx, proxy error); this process is then offline, and
    `unreachable()` says why. Asks nothing when HF_HUB_OFFLINE is already set."""
    global _unreachable
    if is_offline():
        return _unreachable is None
    import requests
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    bound_waits(timeouts)
    where = endpoint()
    if where in _answered:
        return True
    label = model_id + (f"@{revision}" if revision else "")
    logger.info(
        f"Asking the Hugging Face Hub at {where} for {label} (waiting at most {timeouts.metadata} s for an "
        f"answer: HF_HUB_ETAG_TIMEOUT)"
    )
    try:
        HfApi(endpoint=where).model_info(model_id, revision=revision, timeout=timeouts.metadata)
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is not None and status < 500 and status not in (407, 429):
            _answered.add(where)
            return True
        _unreachable = Unreachable(where, short_reason(exc, timeouts))
    except requests.RequestException as exc:  # refused, timed out, proxy, TLS, a broken answer
        _unreachable = Unreachable(where, short_reason(exc, timeouts))
    except ValueError:  # not a valid repository id: the download that follows says so
        return True
    else:
        _answered.add(where)
        return True
    from huggingface_hub import constants

    logger.warning(
        f"The Hugging Face Hub at {where} cannot be reached ({_unreachable.reason}): looking in the Hugging "
        f"Face cache ({constants.HF_HUB_CACHE}) instead, with no further network access"
    )
    go_offline()
    return False


def report_to_stderr() -> None:
    """For the command-line scripts: print what the Hub is waited for (and its failures) on stderr."""
    if not any(getattr(h, "_reranker_hub", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._reranker_hub = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def short_reason(exc: BaseException, timeouts: HubTimeouts | None = None) -> str:
    """`ConnectionError: [Errno 111] Connection refused` rather than three nested reprs."""
    import requests

    if isinstance(exc, requests.Timeout):
        seconds = (timeouts or HubTimeouts()).metadata
        return f"{type(exc).__name__}: no answer within {seconds} s"
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\][^'\"()]*", text)
    if errno:
        text = errno.group(0).strip()
    elif len(text) > 200:
        text = text[:200] + "..."
    return f"{type(exc).__name__}: {text}"


def unreachable_message(what: str, *, model_id: str, where: str, reason: str) -> str:
    """The Hub could not be reached: which endpoint, why, and the ways out."""
    return (
        f"Could not download {what} from the Hugging Face Hub at {where} ({reason}). Things to try: "
        f"check the network, or set a proxy (HTTPS_PROXY=http://proxy:port); set HF_TOKEN if the Hub "
        f"answers 401/403 or rate-limits you; check HF_ENDPOINT if you use a mirror; or, on a machine that "
        f"can reach the Hub, run `{LOCAL_SAVE_COMMAND.format(model=model_id)}`, copy DIR here and set "
        f"RERANK_MODEL_PATH=DIR (or set RERANK_MODEL_PATH to a model directory you already have)."
    )


def hub_failure_message(what: str, exc: BaseException, *, model_id: str) -> str:
    """Why `what` (for the model `model_id`) could not be fetched, and what the user can do about it."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    cause = exc.__cause__ or exc
    if isinstance(cause, GatedRepoError):
        return (
            f"{what} is gated on the Hugging Face Hub: accept its terms on the model page, then set "
            f"HF_TOKEN to a token of that account."
        )
    if isinstance(cause, RepositoryNotFoundError):
        return (
            f"{what} was not found on the Hugging Face Hub ({endpoint()}). Check the model id; if the "
            f"repository is private, set HF_TOKEN."
        )
    if isinstance(cause, RevisionNotFoundError):
        return f"{what}: that revision does not exist on the Hugging Face Hub. Check --revision."
    if _unreachable is not None:  # we went offline because the Hub did not answer
        return unreachable_message(what, model_id=model_id, where=_unreachable.endpoint,
                                   reason=_unreachable.reason)
    if constants.HF_HUB_OFFLINE:
        return (
            f"{what} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 "
            f"forbids downloading it. Unset HF_HUB_OFFLINE, or point HF_HOME at a cache that has it."
        )
    return unreachable_message(what, model_id=model_id, where=endpoint(), reason=short_reason(cause))
