"""Secrets never leave in text: a whole session's life with every logger at DEBUG, then a search
of the log output, exception messages, reprs and the emulator's request log for every secret the
emulator issued (``ColabEmulator.issued_secrets()``).

The life runs twice: ``backend="emulator"`` (the loopback OAuth sign-in, refresh tokens) and
``backend="colab"`` against the emulator with an EnvironmentToken (a token that cannot be
refreshed, so revoking it ends in an AuthError). Both sessions also hold the user's own secrets
(``secrets=``: read from the environment by name, or given outright), which the kernel reads
through ``google.colab.userdata`` and ``os.environ``; they are searched for too. Each place a
secret could surface is its own test, so a leak names the place.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import colabremote as cr
from colabremote._colab.auth import EnvironmentToken
from colabremote.exceptions import AuthError, ConfigurationError, RuntimeNotReleasedWarning
from colabremote.testing import ColabEmulator, drop_connection, emulator_of

from .conftest import Output

# Two whole session lives, each with a runtime's jupyter_server to start.
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # whole sessions at DEBUG

# Everything that logs in a session's process; the root catches the rest.
LOGGERS = ("colabremote", "websockets", "httpx", "httpcore", "tornado", "asyncio")


def shout(text: str) -> str:
    print(f"shouting {text}", flush=True)
    return text.upper()


def fail() -> None:
    raise ValueError("remote failure")


#: The user's secrets each session holds (the evidence fixture puts both in the environment:
#: the emulator life reads them from there by name, the colab life is given them outright).
GIVEN_SECRET = ("COLABREMOTE_SCAN_GIVEN", "given-s3cret-4d2a9b")
ENV_SECRET = ("COLABREMOTE_SCAN_FROM_ENV", "env-s3cret-8e51c0")
USER_SECRETS = frozenset({GIVEN_SECRET[1], ENV_SECRET[1]})


def secret_digests(names: list[str]) -> list[str]:
    """Each secret through userdata.get and os.environ, hashed (never sent back as is)."""
    import hashlib
    import os

    from google.colab import userdata

    out = []
    for name in names:
        assert userdata.get(name) == os.environ[name]
        out.append(hashlib.sha256(os.environ[name].encode()).hexdigest())
    return out


def raise_after_reading(name: str) -> None:
    from google.colab import userdata

    userdata.get(name)
    raise ValueError(f"failed after reading {name}")


class Recorder(logging.Handler):
    """Every record, formatted as a log file would show it (traceback included), by logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, self.format(record)))


@pytest.fixture(scope="module")
def debug_logs() -> Iterator[Recorder]:
    """Root and every logger at DEBUG into a :class:`Recorder`; the levels come back after."""
    recorder = Recorder()
    root = logging.getLogger()
    for name in LOGGERS:
        logging.getLogger(name)  # exists before the walk below, so it is set to DEBUG too
    known = [root] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in known]
    for logger in known:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
    islands = [logger for logger in known if not logger.propagate]
    for logger in [root, *islands]:
        logger.addHandler(recorder)
    try:
        yield recorder
    finally:
        for logger in [root, *islands]:
            logger.removeHandler(recorder)
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled


def spellings(secret: str) -> set[str]:
    """A secret as it may appear in text: as is, or percent-encoded in a URL."""
    return {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}


@dataclass(repr=False)
class Evidence:
    """What one session's life left behind, and the secrets to look for in it (its repr, which
    pytest prints on a failure, shows neither)."""

    secrets: frozenset[str] = frozenset()
    logs: list[tuple[str, str]] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    reprs: list[str] = field(default_factory=list)
    request_log: str = ""

    def __repr__(self) -> str:
        return f"<Evidence: {len(self.secrets)} secrets, {len(self.logs)} log lines>"

    def exception(self, exc: BaseException) -> None:
        """The exception as a traceback shows it: message, chained causes and all."""
        self.exceptions.append("".join(traceback.format_exception(exc)))

    def describe(self, *objects: object) -> None:
        for obj in objects:
            self.reprs += [repr(obj), str(obj)]

    def leaks(self, texts: list[str]) -> list[str]:
        """The texts that contain a secret, each with the secret replaced by a marker (so that
        the failure message does not print it either)."""
        found = []
        for text in texts:
            hits = [
                (spelling, secret)
                for secret in self.secrets
                for spelling in spellings(secret)
                if spelling in text
            ]
            for spelling, secret in hits:
                text = text.replace(spelling, f"<SECRET {secret[:6]}...>")
            if hits:
                found.append(text)
        return found

    def log_leaks(self, *, websockets: bool) -> list[str]:
        return self.leaks(
            [line for name, line in self.logs if name.startswith("websockets") == websockets]
        )


def live(session: cr.Session, emu: ColabEmulator, tmp_path: Path, evidence: Evidence) -> None:
    """Calls with output, exec, a remote exception, files both ways, a proxy-token refresh,
    a dropped connection and reconnect."""
    f = session.remote(shout)
    assert f("a") == "A"
    session.exec("print('exec ran')")
    with pytest.raises(ValueError, match="remote failure") as raised:
        session.remote(fail)()
    evidence.exception(raised.value)
    source = tmp_path / "up.txt"
    source.write_text("payload")
    session.upload(source, "/content/up.txt", progress=False)
    emu.expire_proxy_tokens()  # the next proxied request gets 404 and fetches a new token
    session.download("/content/up.txt", tmp_path / "down.txt", progress=False)
    assert (tmp_path / "down.txt").read_text() == "payload"
    in_flight = session.remote(shout).submit("b")
    drop_connection(session)
    assert in_flight.result(timeout=120) == "B"
    names = [GIVEN_SECRET[0], ENV_SECRET[0]]
    wanted = [
        hashlib.sha256(value.encode()).hexdigest() for value in (GIVEN_SECRET[1], ENV_SECRET[1])
    ]
    assert session.remote(secret_digests)(names) == wanted
    with pytest.raises(ValueError, match="failed after reading") as read_then_failed:
        session.remote(raise_after_reading)(GIVEN_SECRET[0])
    evidence.exception(read_then_failed.value)
    evidence.describe(session, session.info(), session.runtime(), f, emu, emu.faults)
    evidence.describe(session._core.environment, session._core.backend.secrets)


def released(emu: ColabEmulator) -> bool:
    """Whether the client asked for its runtime's release (v1 unassign or v1beta delete)."""
    return any(
        record.method in ("POST", "DELETE")
        and record.status == 200
        and (record.path.startswith("/tun/m/unassign/") or record.path.startswith("/v1beta/"))
        for record in emu.requests
    )


def finish(evidence: Evidence, emu: ColabEmulator, recorder: Recorder) -> Evidence:
    evidence.secrets = emu.issued_secrets() | USER_SECRETS
    evidence.logs = list(recorder.lines)
    evidence.request_log = repr(emu.requests)
    evidence.describe(emu, emu.runtimes)
    # Sanity: the search has something to find, and the logs did run at DEBUG.
    assert len(evidence.secrets) >= 7
    assert any(name.startswith("websockets") for name, _ in evidence.logs)
    assert any(name.startswith("tornado") for name, _ in evidence.logs)
    return evidence


def emulator_life(recorder: Recorder, tmp_path: Path) -> Evidence:
    """``backend="emulator"``: sign-in, assign, the life, access tokens revoked and refreshed
    through the refresh token, release on close."""
    evidence = Evidence()
    output = Output()
    session = cr.Session(
        "emulator",
        gpu="T4",
        on_output=output,
        progress=False,
        secrets=[GIVEN_SECRET[0], ENV_SECRET[0]],
    )
    emu = emulator_of(session)
    with session:
        live(session, emu, tmp_path, evidence)
        emu.revoke_access_tokens()
        emu.expire_proxy_tokens()
        in_flight = session.remote(shout).submit("c")
        drop_connection(session)  # reconnecting needs a new proxy token, so a new access token
        assert in_flight.result(timeout=120) == "C"
        assert session.remote(shout)("d") == "D"
        endpoint = session.runtime().endpoint
    assert released(emu)
    assert "shouting a" in output.text() and "exec ran" in output.text()
    # What the life was meant to cover did happen: proxy tokens renewed after each expiry, and
    # the revoked access token replaced through the refresh token (a second token grant).
    assert len(emu.runtime(endpoint).proxy_tokens) >= 3
    grants = [r for r in emu.requests if r.path == "/token" and r.status == 200]
    assert len(grants) >= 2
    # A secret that cannot be found fails the open; the one that was found is not in the text.
    with pytest.raises(ConfigurationError) as missing:
        cr.Session("local", secrets=[ENV_SECRET[0], "COLABREMOTE_SCAN_MISSING"]).open()
    evidence.exception(missing.value)
    return finish(evidence, emu, recorder)


def colab_life(recorder: Recorder, tmp_path: Path) -> Evidence:
    """``backend="colab"`` against the emulator with an EnvironmentToken: the life and release
    on close; then a second session whose token is revoked, which cannot refresh it."""
    evidence = Evidence()
    with ColabEmulator() as emu:
        credentials = EnvironmentToken(emu.mint_access_token())
        with cr.Session(
            "colab",
            base_url=emu.url,
            credentials=credentials,
            gpu="T4",
            progress=False,
            secrets=dict([GIVEN_SECRET, ENV_SECRET]),
        ) as session:
            live(session, emu, tmp_path, evidence)
            evidence.describe(credentials)
        assert released(emu)
        # Its runtime cannot be released either (the token is dead, and there is no stored
        # sign-in to fall back on): the close warns, and the warning's text is searched too.
        with (
            pytest.warns(RuntimeNotReleasedWarning) as warned,
            cr.Session(
                "colab",
                base_url=emu.url,
                credentials=EnvironmentToken(emu.mint_access_token()),
                progress=False,
            ) as doomed,
        ):
            assert doomed.remote(shout)("e") == "E"
            emu.revoke_access_tokens()
            emu.expire_proxy_tokens()
            emu.drop_websockets()
            with pytest.raises(AuthError) as refused:
                doomed.remote(shout)("f")
            evidence.exception(refused.value)
        for warning in warned:
            evidence.exception(Exception(str(warning.message)))
        for endpoint in emu.assigned_endpoints():
            emu.release(endpoint)
    return finish(evidence, emu, recorder)


@pytest.fixture(scope="module", params=["emulator", "colab"])
def evidence(
    request: pytest.FixtureRequest,
    debug_logs: Recorder,
    tmp_path_factory: pytest.TempPathFactory,
) -> Evidence:
    debug_logs.lines.clear()
    tmp_path = tmp_path_factory.mktemp(request.param)
    life = emulator_life if request.param == "emulator" else colab_life
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (GIVEN_SECRET, ENV_SECRET):
            patch.setenv(name, value)
        return life(debug_logs, tmp_path)


def test_logs_carry_no_secret(evidence: Evidence) -> None:
    assert evidence.log_leaks(websockets=False) == []


def test_exceptions_carry_no_secret(evidence: Evidence) -> None:
    assert evidence.exceptions
    assert evidence.leaks(evidence.exceptions) == []


def test_reprs_carry_no_secret(evidence: Evidence) -> None:
    assert evidence.leaks(evidence.reprs) == []


def test_the_emulator_request_log_carries_no_secret(evidence: Evidence) -> None:
    assert "<redacted>" in evidence.request_log
    assert evidence.leaks([evidence.request_log]) == []


def test_websockets_debug_log_carries_no_secret(evidence: Evidence) -> None:
    assert evidence.log_leaks(websockets=True) == []
