"""The API-key store without a server: parsing, the fail-closed start, reloads on change, the compare."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from service.api.auth import KeyStore, KeysUnavailable, bearer_token, parse_keys, signature
from service.settings import Settings


class Clock:
    """A hand-moved monotonic clock, so reload timing is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write_keys(path: Path, text: str, bump_ns: int = 0) -> None:
    """Write `text` and move the mtime on by `bump_ns`: a test writes faster than an mtime tick."""
    path.write_text(text)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump_ns))


def test_a_file_skips_blank_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    write_keys(path, "# ops team\n\n  alpha  \n#beta\nbravo\n")
    store = KeyStore.from_setting(SecretStr(str(path)))
    assert store is not None and len(store) == 2
    assert store.matches(b"alpha") and store.matches(b"bravo")
    assert not store.matches(b"beta") and not store.matches(b"# ops team") and not store.matches(b"")


def test_inline_keys_are_comma_separated() -> None:
    store = KeyStore.from_setting(SecretStr(" one, two ,,three\n"))
    assert store is not None and len(store) == 3
    assert all(store.matches(k) for k in (b"one", b"two", b"three"))
    assert not store.matches(b"one, two")
    rotation = ",".join(f"{i}" * 64 for i in range(5))  # longer than a file name may be: still keys
    store = KeyStore.from_setting(rotation)
    assert store is not None and len(store) == 5 and store.matches(b"3" * 64)


@pytest.mark.parametrize("value", [None, "", "   ", SecretStr("")])
def test_unset_or_blank_turns_authentication_off(value: SecretStr | str | None) -> None:
    assert KeyStore.from_setting(value) is None


@pytest.mark.parametrize("content", [None, "", "# only a comment\n\n"])
def test_a_missing_or_empty_file_refuses_to_start(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KeysUnavailable, match="refusing to start"):
        KeyStore.from_setting(str(path))


def test_a_relative_path_that_is_missing_is_not_taken_for_a_key(tmp_path: Path) -> None:
    with pytest.raises(KeysUnavailable, match="cannot be read"):
        KeyStore.from_setting("./no-such-dir/keys")


def test_a_changed_file_is_read_again_at_most_once_per_interval(tmp_path: Path) -> None:
    path, clock = tmp_path / "keys", Clock()
    write_keys(path, "old\nkept\n")
    store = KeyStore.from_file(path)
    store._clock = clock
    store._next_check = clock.now + 1.0
    write_keys(path, "kept\nnew\n", bump_ns=10_000_000)
    clock.now += 0.5
    assert store.matches(b"old")  # inside the interval: not looked at yet
    clock.now += 0.6
    assert not store.matches(b"old") and store.matches(b"new") and store.matches(b"kept")


def test_a_rewrite_in_one_mtime_tick_still_reloads_by_size(tmp_path: Path) -> None:
    path, clock = tmp_path / "keys", Clock()
    write_keys(path, "first\n")
    store = KeyStore(parse_keys(["first"]), path, signature(path), clock=clock)
    mtime = os.stat(path).st_mtime_ns
    path.write_text("second-key\n")
    os.utime(path, ns=(mtime, mtime))
    clock.now += 1.5
    assert store.matches(b"second-key") and not store.matches(b"first")


def test_a_file_that_disappears_or_empties_refuses_everyone(tmp_path: Path) -> None:
    path, clock = tmp_path / "keys", Clock()
    write_keys(path, "alpha\n")
    store = KeyStore(parse_keys(["alpha"]), path, signature(path), clock=clock)
    path.unlink()
    clock.now += 1.5
    assert not store.matches(b"alpha")
    write_keys(path, "alpha\n")
    clock.now += 1.5
    assert store.matches(b"alpha")  # back: served again without a restart
    write_keys(path, "\n", bump_ns=10_000_000)
    clock.now += 1.5
    assert not store.matches(b"alpha") and len(store) == 0


def test_every_key_is_compared_even_after_a_match(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.api.auth as auth

    calls: list[bytes] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(a)
        assert len(a) == len(b) == 32  # digests: the lengths of the keys never meet
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    store = KeyStore(parse_keys(["first", "second", "a-much-longer-third-key"]))
    assert store.matches(b"first")
    assert len(calls) == 3
    assert not store.matches(b"x")
    assert len(calls) == 6


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ([(b"authorization", b"Bearer abc")], b"abc"),
        ([(b"authorization", b"bearer   abc ")], b"abc"),
        ([(b"authorization", b"Basic YTpi")], None),
        ([(b"authorization", b"Bearer")], None),
        ([(b"x-api-key", b"abc")], None),
        ([], None),
    ],
)
def test_the_bearer_token_is_read_from_the_authorization_header(
    headers: list[tuple[bytes, bytes]], token: bytes | None
) -> None:
    assert bearer_token({"headers": headers}) == token


def test_settings_never_show_the_keys() -> None:
    settings = Settings(api_keys="hunter2,swordfish")
    assert "hunter2" not in repr(settings) and "swordfish" not in str(settings.model_dump())
    assert settings.api_keys is not None and settings.api_keys.get_secret_value() == "hunter2,swordfish"


def test_a_file_that_turns_unreadable_refuses_everyone_instead_of_failing(tmp_path: Path) -> None:
    path, clock = tmp_path / "keys", Clock()
    write_keys(path, "alpha\n")
    store = KeyStore(parse_keys(["alpha"]), path, signature(path), clock=clock)
    path.write_bytes(b"\xff\xfe alpha\n")
    clock.now += 1.5
    assert not store.matches(b"alpha")
