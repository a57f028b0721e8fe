"""Where we meet huggingface_hub: its exceptions, each translated here, and only here, into the one
line a user can act on; and the progress class it reports a download's bytes to."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from openi2v.errors import OpenI2VError

INDEX = "model_index.json"
OFFLINE = "offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set): unset it to download"


class PullError(OpenI2VError):
    """A pull that cannot go on, in one line a user can act on."""


@contextmanager
def hub_errors(repo: str, endpoint: str | None, role: str = "repo", path: str | None = None) -> Iterator[None]:
    """huggingface_hub's exceptions, each as the one line a user can act on."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    hub = (endpoint or constants.ENDPOINT).rstrip("/")
    try:
        yield
    except hf.GatedRepoError as exc:
        raise PullError(f"{repo} is gated: accept its licence at {hub}/{repo} while logged in, then set HF_TOKEN "
                        "to a token of that account") from exc
    except hf.RepositoryNotFoundError as exc:
        raise PullError(f"{role} {repo} not found on {hub} (if it is private, set HF_TOKEN)") from exc
    except hf.RemoteEntryNotFoundError as exc:
        raise PullError(f"{path or INDEX} not found in {repo} on {hub}") from exc
    except hf.OfflineModeIsEnabled as exc:
        raise PullError(OFFLINE) from exc
    except hf.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        if status == 401:
            raise PullError(f"{hub} refused the token (401 Unauthorized): check HF_TOKEN") from exc
        raise PullError(f"{hub} answered {status} for {repo}: {first_line(exc)}") from exc
    except (hf.LocalEntryNotFoundError, httpx2.TransportError) as exc:
        raise PullError(f"cannot reach {hub}: {first_line(exc.__cause__ or exc)}") from exc
    except hf.HFValidationError as exc:
        raise PullError(f"{role} {repo!r} is not a Hub repo id: {first_line(exc)}") from exc
    except OSError as exc:  # disk full, permissions, a size that never matched
        raise PullError(f"{path or repo}: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


class Bar:
    """What huggingface_hub reports a download's bytes to (its ``tqdm_class``), passed on to ``advance``."""

    advance: Callable[[int], None]

    def __init__(self, *args, **kwargs) -> None:
        pass

    def update(self, n: int = 1) -> None:
        self.advance(n)

    def _ignore(self, *args, **kwargs) -> None:
        """Xet's network bytes (the bar counts the bytes written), rates, redraws."""

    update_transfer = set_postfix_str = set_transfer_postfix_str = refresh = close = _ignore

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        pass


def bar_class(advance: Callable[[int], None]) -> type[Bar]:
    return type("Bar", (Bar,), {"advance": staticmethod(advance)})
