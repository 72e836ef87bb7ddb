"""Optional API-key authentication: `Authorization: Bearer <key>` on every inference and model path.

Pure ASGI, like the rest of `middleware.py`, and placed inside `RequestContext` (a refusal carries
the request id) but outside `Admission`: a refused request never holds a queue place, is never
parsed or computed, and is not counted among the questions (`dynaqa_requests_total`).

Keys come from `DYNAQA_API_KEYS`: a file of keys (a Kubernetes Secret mounted as a volume, re-read
when it changes so a revoked key is refused without a restart) or the keys inline, comma-separated
(a Secret as an environment variable). Only sha256 digests of the keys are kept, and no key is
ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import error_response
from service.runtime import Runtime

log = logging.getLogger("dynaqa.access")
REALM = 'Bearer realm="dynaqa"'
# Probes, scrapers and the API docs must work without a key: a kubelet or Prometheus has none.
OPEN_PATHS = frozenset({"/metrics", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})
OPEN_PREFIX = "/v2/health/"
# A value starting like a path is a file of keys, so a missing Secret volume fails closed at start-up
# instead of becoming a key spelled like a path.
PATH_STARTS = ("/", "./", "../", "~")
MESSAGES = {
    "missing": "an API key is required: send Authorization: Bearer <key>",
    "invalid": "the API key is not valid",
}


class KeysUnavailable(RuntimeError):
    """Keys are configured but none can be read: the service refuses to start rather than run open."""


def digest(key: bytes) -> bytes:
    """What is stored and compared: equal-length digests, so a comparison's time says nothing of lengths."""
    return hashlib.sha256(key).digest()


def parse_keys(items: Iterable[str]) -> tuple[bytes, ...]:
    """Digests of the keys among `items` (a file's lines, or the inline list); blank items and `#`
    comments are skipped, so a keys file may note who holds which key."""
    keys = (item.strip() for item in items)
    return tuple(digest(k.encode("utf-8")) for k in keys if k and not k.startswith("#"))


def _is_file(text: str) -> bool:
    """Whether `text` names an existing file; a long inline list of keys is no file name at all."""
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # ENAMETOOLONG; a NUL in the value
        return False


def signature(path: Path) -> tuple[int, int, int]:
    """mtime, size and inode: a rewrite shows in one of them even within one mtime tick, and a
    Secret update (an atomic symlink swap) shows as a new inode."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


def read_file(path: Path) -> tuple[tuple[int, int, int], tuple[bytes, ...]]:
    """The file's signature, taken before it is read (a write after it changes it, and the next
    check reads again), and its keys; `KeysUnavailable` when it cannot be read or decoded."""
    try:
        seen = signature(path)
        return seen, parse_keys(path.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise KeysUnavailable(f"DYNAQA_API_KEYS names {path}, which cannot be read ({why})") from None


class KeyStore:
    """The accepted keys, as digests. With a file, `matches` re-reads it when its signature changed,
    checking at most every `check_every_s`, so a stat per request costs nothing under load."""

    def __init__(
        self,
        digests: Iterable[bytes],
        path: Path | None = None,
        seen: tuple[int, int, int] | None = None,
        check_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`seen`: the file's signature when `digests` were read from it."""
        self._digests = tuple(digests)
        self.path = path
        self._signature = seen
        self.check_every_s = check_every_s
        self._clock = clock
        self._next_check = clock() + check_every_s

    @classmethod
    def from_setting(cls, value: SecretStr | str | None) -> KeyStore | None:
        """The store `DYNAQA_API_KEYS` names, or None when it is unset or blank (authentication off).
        Raises `KeysUnavailable` when it names a file that is missing or holds no key."""
        text = (value.get_secret_value() if isinstance(value, SecretStr) else value or "").strip()
        if not text:
            return None
        if text.startswith(PATH_STARTS) or _is_file(text):
            return cls.from_file(Path(text).expanduser())
        keys = parse_keys(re.split(r"[,\n]", text))
        if not keys:
            raise KeysUnavailable("DYNAQA_API_KEYS holds no key: refusing to start open")
        return cls(keys)

    @classmethod
    def from_file(cls, path: Path) -> KeyStore:
        try:
            seen, keys = read_file(path)
        except KeysUnavailable as exc:
            raise KeysUnavailable(f"{exc}: refusing to start without keys") from None
        if not keys:
            raise KeysUnavailable(f"DYNAQA_API_KEYS names {path}, which holds no key: refusing to start open")
        return cls(keys, path, seen)

    def __len__(self) -> int:
        self._refresh()
        return len(self._digests)

    def matches(self, presented: bytes) -> bool:
        """Whether `presented` is one of the keys. Every key is compared, with no early exit, so the
        time taken says neither whether nor which key matched."""
        self._refresh()
        wanted = digest(presented)
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(known, wanted)
        return found

    def _refresh(self) -> None:
        if self.path is None or self._clock() < self._next_check:
            return
        self._next_check = self._clock() + self.check_every_s
        try:
            if signature(self.path) == self._signature:
                return
            self._signature, self._digests = read_file(self.path)
        except (OSError, KeysUnavailable) as exc:  # fail closed: a key that cannot be read is no key
            self._signature, self._digests = None, ()
            log.error(json.dumps({"event": "api keys unreadable: every request is refused", "error": str(exc)}))
            return
        event = "api keys reloaded" if self._digests else "api keys file empty: every request is refused"
        log.warning(json.dumps({"event": event, "keys": len(self._digests)}))


def bearer_token(scope: Scope) -> bytes | None:
    """The token of the first `Authorization: Bearer ...` header (the scheme is case-insensitive)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() != b"bearer":
                return None
            return token.strip() or None
    return None


def refusal(reason: str) -> JSONResponse:
    """401 with the RFC 6750 challenge; `error_response` gives the body the shape of the path it is
    sent on (the Open Inference Protocol's `{"error": str}` on `/v2...`, the service's elsewhere)."""
    response = error_response(401, "unauthorized", MESSAGES[reason])
    response.headers["WWW-Authenticate"] = REALM + (', error="invalid_token"' if reason == "invalid" else "")
    return response


class Auth:
    """Refuses, with 401, a request for a closed path without a configured key; does nothing when
    `keys` is None (authentication off)."""

    def __init__(self, app: ASGIApp, keys: KeyStore | None, runtime: Runtime) -> None:
        self.app = app
        self.keys = keys
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if self.keys is None or scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIX):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        reason = "missing" if token is None else None if self.keys.matches(token) else "invalid"
        if reason is None:
            await self.app(scope, receive, send)
            return
        if self.runtime.metrics is not None:
            self.runtime.metrics.unauthorized.labels(reason).inc()
        log.warning(json.dumps({"event": "unauthorized", "path": path[:256], "reason": reason}))
        await refusal(reason)(scope, receive, send)
