"""Fleet state: latency profiles, replica load and degradation levels.

In-process by default (one replica, nothing to install). With `DYNAQA_REDIS_URL`, profiles are
shared under a key made of the checkpoint hash and the hardware, so a new replica on the same
hardware skips calibration, and each replica publishes its load and level with a short TTL.
Redis failing never fails a request or readiness: every call has a short timeout, errors are
logged and counted (`on_error`), and the replica goes on with its local copy.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

PREFIX = "dynaqa"


class StateStore(Protocol):
    kind: str

    def load_profile(self, key: str) -> dict[str, Any] | None: ...
    def save_profile(self, key: str, profile: dict[str, Any]) -> None: ...
    def claim_profile(self, key: str, profile: dict[str, Any]) -> dict[str, Any]: ...
    def publish(self, replica: str, info: dict[str, Any], ttl_s: float) -> None: ...
    def fleet(self) -> dict[str, dict[str, Any]]: ...
    def healthy(self) -> bool: ...


class LocalState:
    """Everything in this process: the default, and the fallback when Redis is away."""

    kind = "local"

    def __init__(self) -> None:
        self._profiles: dict[str, dict[str, Any]] = {}
        self._replicas: dict[str, tuple[float, dict[str, Any]]] = {}

    def load_profile(self, key: str) -> dict[str, Any] | None:
        return self._profiles.get(key)

    def save_profile(self, key: str, profile: dict[str, Any]) -> None:
        self._profiles[key] = profile

    def claim_profile(self, key: str, profile: dict[str, Any]) -> dict[str, Any]:
        """Record `profile` unless one is recorded already; return the one that stays."""
        return self._profiles.setdefault(key, profile)

    def profiles(self) -> dict[str, dict[str, Any]]:
        return dict(self._profiles)

    def publish(self, replica: str, info: dict[str, Any], ttl_s: float) -> None:
        self._replicas[replica] = (time.time() + ttl_s, info)

    def fleet(self) -> dict[str, dict[str, Any]]:
        now = time.time()
        return {name: info for name, (expires, info) in self._replicas.items() if expires > now}

    def healthy(self) -> bool:
        return True


class RedisState:
    """Redis-backed fleet state with a local shadow that answers whenever Redis cannot."""

    kind = "redis"

    def __init__(self, url: str, on_error: Callable[[str], None], timeout_s: float = 0.25) -> None:
        import redis

        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
        )
        self._errors = redis.RedisError, OSError
        self._local = LocalState()
        self._on_error = on_error
        self._ok = True

    def _call(self, operation: str, fn: Callable[[], Any]) -> Any:
        try:
            result = fn()
        except self._errors as exc:
            if self._ok:
                log.warning(json.dumps({"event": "redis unavailable", "operation": operation, "error": str(exc)}))
            self._ok = False
            self._on_error(operation)
            raise
        if not self._ok:
            self._ok = True
            log.info(json.dumps({"event": "redis back", "operation": operation}))
            self._resync()
        return result

    def _resync(self) -> None:
        """After an outage, write back what this replica knows (a restarted Redis is empty)."""
        for key, profile in self._local.profiles().items():
            self.save_profile(key, profile)

    def load_profile(self, key: str) -> dict[str, Any] | None:
        try:
            text = self._call("load_profile", lambda: self._redis.get(f"{PREFIX}:profile:{key}"))
        except self._errors:
            return self._local.load_profile(key)
        try:
            profile = json.loads(text) if text is not None else None
        except ValueError:
            profile = None
        return profile if isinstance(profile, dict) else self._local.load_profile(key)

    def save_profile(self, key: str, profile: dict[str, Any]) -> None:
        self._local.save_profile(key, profile)
        try:
            self._call("save_profile", lambda: self._redis.set(f"{PREFIX}:profile:{key}", json.dumps(profile)))
        except self._errors:
            pass

    def claim_profile(self, key: str, profile: dict[str, Any]) -> dict[str, Any]:
        """Record `profile` unless another replica recorded one first (SET NX), and return the one
        that stays: replicas that start together and each measured then agree on the first's."""
        name = f"{PREFIX}:profile:{key}"
        try:
            if not self._call("claim_profile", lambda: self._redis.set(name, json.dumps(profile), nx=True)):
                theirs = self.load_profile(key)
                if theirs is None:  # not a JSON object: replace it
                    self._call("save_profile", lambda: self._redis.set(name, json.dumps(profile)))
                else:
                    profile = theirs
        except self._errors:
            pass
        self._local.save_profile(key, profile)
        return profile

    def publish(self, replica: str, info: dict[str, Any], ttl_s: float) -> None:
        self._local.publish(replica, info, ttl_s)
        key = f"{PREFIX}:replica:{replica}"
        try:
            self._call("publish", lambda: self._redis.set(key, json.dumps(info), px=int(ttl_s * 1000)))
        except self._errors:
            pass

    def fleet(self) -> dict[str, dict[str, Any]]:
        def read() -> dict[str, dict[str, Any]]:
            keys = list(self._redis.scan_iter(f"{PREFIX}:replica:*", count=100))
            values = self._redis.mget(keys) if keys else []
            prefix = len(f"{PREFIX}:replica:")
            replicas = {}
            for key, value in zip(keys, values):
                try:
                    info = json.loads(value) if value is not None else None
                except ValueError:
                    info = None
                if isinstance(info, dict):  # ignore entries some other writer left malformed
                    replicas[key[prefix:]] = info
            return replicas

        try:
            return self._call("fleet", read)  # type: ignore[no-any-return]
        except self._errors:
            return self._local.fleet()

    def healthy(self) -> bool:
        return self._ok
