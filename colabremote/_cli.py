"""``colabremote``: sign in, see who you are, list and release runtimes, open a terminal on one,
forward a port, run an emulator.

    colabremote login [--adc | --no-browser] [--client-secrets FILE]
    colabremote logout
    colabremote whoami
    colabremote runtimes
    colabremote runtimes release ENDPOINT | --all
    colabremote secrets set NAME | delete NAME
    colabremote shell [ENDPOINT]
    colabremote forward [ENDPOINT] PORT [--local-port N]
    colabremote emulator
    colabremote calls [ENDPOINT]
    colabremote logs ID [--follow]
    colabremote cancel ID
    colabremote keep-alive ENDPOINT

``login --adc`` runs gcloud's ADC sign-in with the Colab scopes (the route Google's own CLI
uses), then checks the token with Colab. ``--base-url URL`` (or ``COLABREMOTE_BASE_URL``), before
or after the command, points every command at a Colab emulator. Its sign-in is kept apart from
the Google one; plain http is accepted only to a loopback address. ``secrets set NAME`` keeps a
secret for ``Session(secrets=[NAME])`` in the OS keyring, asking for it without echo.
``forward`` reaches a port of a runtime (the only one assigned, or ENDPOINT) from
http://127.0.0.1:<port> until Ctrl-C or SIGTERM. ``calls``, ``logs`` and ``cancel`` see the
detached calls (``f.spawn``) on a runtime; ``keep-alive`` pings a runtime until Ctrl-C, so Colab
does not reclaim it while a detached call runs with no session open.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._tracebacks import debugging
from .exceptions import (
    BackendError,
    ColabError,
    ColabRemoteError,
    ConfigurationError,
    RuntimeGone,
    SignInRequired,
)

if TYPE_CHECKING:
    from .testing._emulator import ColabEmulator

_DESCRIPTION = """Sign in to Google Colab, list and release runtimes, open a terminal on one, keep
secrets, forward a port, follow and cancel detached calls, keep a runtime alive, run an emulator.

Signing in: `colabremote login --adc` (gcloud's Application Default Credentials, the usual
route), or `colabremote login --client-secrets FILE` with your own OAuth client.
--base-url URL (or COLABREMOTE_BASE_URL) points every command at a Colab emulator; its
sign-in is kept apart from the Google one."""


def _endpoints(args: argparse.Namespace) -> Any:
    from ._colab.endpoints import ColabEndpoints

    if not args.base_url:
        return ColabEndpoints.production()
    return ColabEndpoints.at(args.base_url, setting=args.base_url_setting)


def _store(args: argparse.Namespace) -> Any:
    """The token store for the origin the commands talk to."""
    from ._colab.tokens import TokenStore

    return TokenStore(origin=_endpoints(args).origin)


def _oauth(args: argparse.Namespace, store: Any, client: Any = None) -> Any:
    from ._colab.auth import ClientConfig, GoogleOAuth

    if client is None and args.client_secrets:
        client = ClientConfig.from_file(args.client_secrets)
    return GoogleOAuth.for_endpoints(_endpoints(args), client, store=store)


def _control(args: argparse.Namespace, credentials: Any) -> Any:
    from ._colab.control import ControlPlane

    return ControlPlane(credentials, endpoints=_endpoints(args))


def _credentials(args: argparse.Namespace) -> Any:
    from ._colab.auth import find_credentials

    store = _store(args)
    return find_credentials(store=store, oauth=_oauth(args, store))


async def _login_adc(args: argparse.Namespace) -> int:
    """Run gcloud's ADC sign-in with the Colab scopes (or print it), then check it with Colab."""
    from ._colab.auth import ADC_EXTRA, adc_installed, gcloud_adc_command

    if args.base_url:
        raise ConfigurationError(
            f"--adc checks Application Default Credentials with Google; they are never sent "
            f"to another origin ({args.base_url_setting} is set)"
        )
    command = gcloud_adc_command()
    if not adc_installed():
        raise ConfigurationError(
            f"Application Default Credentials need google-auth: {ADC_EXTRA}; then run "
            "`colabremote login --adc` again"
        )
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        print("gcloud is not on PATH. Install the Google Cloud CLI, then sign in with:")
        print(f"  {command}")
        print("and check the result with `colabremote login --adc`.")
        return 1
    print(f"Running: {command}", flush=True)
    code = await asyncio.to_thread(subprocess.call, [gcloud, *command.split()[1:]])
    if code != 0:
        raise SignInRequired(f"gcloud did not sign in (exit status {code}); run: {command}")
    from ._colab.auth import GoogleOAuth, load_adc
    from ._colab.endpoints import ColabEndpoints

    oauth = GoogleOAuth()
    adc = load_adc(scope_lookup=oauth.token_scopes)
    account, balance = await check_adc(adc, ColabEndpoints.production(), oauth)
    print(f"Signed in as {account or 'an unknown account'} with Application Default Credentials.")
    print(f"Colab accepts them (compute units: {balance:g}); sessions find them by default.")
    return 0


async def check_adc(adc: Any, endpoints: Any, oauth: Any) -> tuple[str | None, float]:
    """The account of ``adc`` and its compute-unit balance: one authenticated Colab call
    (``/tun/m``, which takes gcloud's tokens) proves the credentials and their scopes work.
    Closes ``adc`` and ``oauth``."""
    from ._colab.control import ControlPlane

    control = ControlPlane(adc, endpoints=endpoints)
    try:
        usage = await control.ccu_info()
        info = await oauth.userinfo(await adc.token())
    finally:
        await control.aclose()
        await adc.aclose()
        await oauth.aclose()
    email = info.get("email")
    return (email if isinstance(email, str) else None), usage.current_balance


async def _login(args: argparse.Namespace) -> int:
    if args.adc:
        return await _login_adc(args)
    store = _store(args)
    client = None
    if args.client_secrets:
        from ._colab.auth import keep_client_file

        # Kept next to the sign-in (for this origin), so tokens can be refreshed later.
        client, _kept = keep_client_file(args.client_secrets, store.config_dir, store.origin)
    oauth = _oauth(args, store, client)
    async with oauth:
        if args.no_browser:
            if args.base_url:  # an emulator shows the code on its own page
                paste = f"{_endpoints(args).colab}/oauth/paste"
                stored = await oauth.login_paste(redirect_uri=paste)
            else:
                stored = await oauth.login_paste()
        else:
            stored = await oauth.login()
    print(
        f"Signed in as {stored.account or 'an unknown account'}; "
        f"credentials kept in {store.describe()}."
    )
    if not store.origin.is_production:
        print(f"This sign-in is for {store.origin} only, kept apart from your Google sign-in.")
    return 0


async def _logout(args: argparse.Namespace) -> int:
    store = _store(args)
    async with _oauth(args, store) as oauth:
        done = await oauth.logout()
    if not done.found:
        print("Was not signed in.")
        return 0
    who = ", ".join(done.accounts) or "the stored account"
    if done.revoked:
        print(f"Revoked the sign-in of {who} at {store.origin}.")
    else:
        print(
            f"Could not revoke the sign-in of {who} at {store.origin} (see the warning above); "
            "it is forgotten here all the same."
        )
    print(f"Removed it from {' and '.join(done.removed)}.")
    print("Signed out.")
    return 0


async def _account(args: argparse.Namespace, credentials: Any) -> str | None:
    """The signed-in account: the stored one, else Google's userinfo for the token (an
    environment token or ADC carry no account name)."""
    account = getattr(credentials, "account", None)
    if isinstance(account, str) and account:
        return account
    async with _oauth(args, _store(args)) as oauth:
        try:
            info = await oauth.userinfo(await credentials.token())
        except ColabRemoteError:
            return None  # the Colab call already worked; the name is a nicety
    email = info.get("email")
    return email if isinstance(email, str) else None


async def _whoami(args: argparse.Namespace) -> int:
    credentials = _credentials(args)
    control = _control(args, credentials)
    try:
        info = await control.user_info(consumption=True)
        account = await _account(args, credentials) or "(account not known)"
    finally:
        await control.aclose()
    print(f"account:       {account}")
    print(f"subscription:  {info.subscription_tier.value}")
    if info.paid_compute_units_balance is not None:
        print(f"compute units: {info.paid_compute_units_balance:g}")
    if info.consumption_rate_hourly is not None:
        print(f"usage rate:    {info.consumption_rate_hourly:g} units/hour")
    for group in info.eligible_accelerators:
        print(f"eligible {group.variant.value}: {', '.join(group.models) or '-'}")
    return 0


async def _runtimes(args: argparse.Namespace) -> int:
    credentials = _credentials(args)
    control = _control(args, credentials)
    try:
        assignments = await control.list_assignments()
        if args.action == "release":
            if not args.all and not args.endpoint:
                raise ConfigurationError("say which runtime: ENDPOINT, or --all")
            targets = [a.endpoint for a in assignments] if args.all else [args.endpoint]
            if not targets:
                print("No Colab runtimes are assigned to this account; nothing to release.")
            for endpoint in targets:
                released = await control.unassign(endpoint)
                print(f"{'released' if released else 'already gone'}: {endpoint}")
            return 0
        if not assignments:
            print("No Colab runtimes are assigned to this account.")
        for a in assignments:
            shape = "high memory" if a.high_memory else "standard"
            version = f", version {a.runtime_version}" if a.runtime_version else ""
            print(f"{a.endpoint}  {a.variant.value} {a.accelerator}, {shape}{version}")
    finally:
        await control.aclose()
    return 0


def _secrets(args: argparse.Namespace) -> int:
    """Keep a secret for ``Session(secrets=[NAME])`` in the OS keyring, or forget it. The value
    is asked for without echo on a terminal, else read as one line from stdin (for scripts)."""
    from ._validation import variable_name
    from ._workspace.secrets import KEYRING_SERVICE, delete_from_keyring, store_in_keyring

    name = variable_name("`colabremote secrets`", args.name, quote=False)
    if args.action == "delete":
        if delete_from_keyring(name):
            print(f"Removed {name} from the OS keyring.")
        else:
            print(f"The OS keyring holds no {name}.")
        return 0
    value = _read_secret(name)
    if not value or "\0" in value:
        raise ConfigurationError(f"no value was given for {name}; nothing was stored")
    where = store_in_keyring(name, value)
    print(f"Stored {name} in the OS keyring ({where}, service {KEYRING_SERVICE!r}).")
    print(f"Sessions read it with secrets=[{name!r}] unless the variable {name} is set.")
    return 0


def _read_secret(name: str) -> str:
    """The secret's value: typed without echo on a terminal, else one line of stdin."""
    import getpass

    if sys.stdin is not None and sys.stdin.isatty():
        return getpass.getpass(f"Value of {name} (not shown): ")
    return sys.stdin.readline().rstrip("\r\n") if sys.stdin is not None else ""


def _shell(args: argparse.Namespace) -> int:
    """An interactive terminal on an assigned runtime (its ``/colab/tty``); the remote shell's
    exit status is the command's. No kernel is started for it."""
    from ._loop import loop_thread
    from ._workspace.terminal import ColabTtyChannel, Terminal, TerminalCore, terminal_size

    loop = loop_thread()
    url, headers = loop.run(_tty_target(args))

    async def open_terminal() -> TerminalCore:
        channel = await ColabTtyChannel.open(url, headers)
        return await TerminalCore.open(channel, terminal_size(sys.stdin.fileno()))

    return Terminal(loop.run(open_terminal()), loop).interact()


async def _tty_target(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """The ``/colab/tty`` URL of the runtime the command names (or the only one assigned),
    and the headers that open it."""
    from ._backends.colab import CLIENT_AGENT
    from ._workspace.terminal import colab_tty_url

    await _reachable(args)
    control = _control(args, _credentials(args))
    try:
        endpoints = [a.endpoint for a in await control.list_assignments()]
        endpoint = args.endpoint
        if endpoint is None:
            if not endpoints:
                raise ConfigurationError(
                    "no Colab runtime is assigned to this account; open a session "
                    "(cr.Session(backend='colab', release=False)) to get one"
                )
            if len(endpoints) > 1:
                raise ConfigurationError(
                    f"{len(endpoints)} Colab runtimes are assigned ({', '.join(endpoints)}); "
                    "say which: colabremote shell ENDPOINT"
                )
            endpoint = endpoints[0]
        elif endpoint not in endpoints:
            listed = ", ".join(endpoints) or "none"
            raise ConfigurationError(
                f"no Colab runtime {endpoint!r} is assigned to this account (assigned: {listed})"
            )
        proxy = await control.refresh_proxy_token(endpoint)
    finally:
        await control.aclose()
    headers = {"X-Colab-Runtime-Proxy-Token": proxy.token, "X-Colab-Client-Agent": CLIENT_AGENT}
    return colab_tty_url(proxy.url), headers


def _emulator(args: argparse.Namespace) -> int:
    from .testing._extra import require_emulator_extra

    require_emulator_extra("`colabremote emulator`")
    from .testing._emulator import ColabEmulator

    # SIGTERM (a service manager, `kill`) stops it as Ctrl-C does: runtimes released, servers
    # and kernels stopped, temp folders removed.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _serve_emulator(ColabEmulator(verbose=args.verbose, python=args.python), args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _forward(args: argparse.Namespace) -> int:
    """Forward a runtime's port to 127.0.0.1 until Ctrl-C or SIGTERM; the runtime stays."""
    from ._workspace.ports import check_port

    if len(args.target) > 2:
        raise ConfigurationError("forward takes [ENDPOINT] PORT, for example: forward 6006")
    *named, port_text = args.target
    if not port_text.isdigit():
        raise ConfigurationError(f"PORT {port_text!r} is not a number; for example: forward 6006")
    port = check_port("PORT", int(port_text))
    local_port = check_port("--local-port", args.local_port, zero_ok=True)
    asyncio.run(_reachable(args))
    endpoint = named[0] if named else asyncio.run(_only_runtime(args))
    import colabremote as cr

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with (
            cr.Session(
                "colab", endpoint=endpoint, release=False, base_url=args.base_url, progress=False
            ) as session,
            session.forward(port, local_port=local_port) as url,
        ):
            print(f"{url} -> port {port} of runtime {endpoint} (Ctrl-C stops)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _detached_session(args: argparse.Namespace, endpoint: str) -> Any:
    """A session on runtime ``endpoint`` that leaves it assigned when it closes."""
    import colabremote as cr

    return cr.Session(
        "colab", endpoint=endpoint, release=False, base_url=args.base_url, progress=False
    )


def _call_endpoint(call_id: str) -> str:
    """The Colab runtime a call id names (the part before its colon), checked before any
    request: only ids of calls on Colab runtimes can be reached from here."""
    from ._kernel.agent.detached import CALL_ID

    match = CALL_ID.fullmatch(call_id)
    if match is None:
        raise ConfigurationError(
            f"{call_id!r} is not a detached call id; ids look like 'ENDPOINT:c-0123456789abcdef' "
            "(`colabremote calls` lists them)"
        )
    endpoint = match["where"]
    if re.fullmatch(r"local-\d+", endpoint):
        raise ConfigurationError(
            f"detached call {call_id} ran on a local kernel, which ended with the process that "
            "started it; only calls on Colab runtimes can be reached from the command line"
        )
    if re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", endpoint):
        raise ConfigurationError(
            f"detached call {call_id} runs on Jupyter server kernel {endpoint}; the command line "
            "reaches Colab runtimes only: attach with "
            "Session('jupyter', url=..., token=...).call(ID) in Python"
        )
    return endpoint


def _calls(args: argparse.Namespace) -> int:
    """List the detached calls on a runtime: id, function, state, times."""
    asyncio.run(_reachable(args))
    endpoint = args.endpoint or asyncio.run(_only_runtime(args))
    with _detached_session(args, endpoint) as session:
        statuses = session.calls()
    if not statuses:
        print(f"no detached calls on runtime {endpoint}")
    for status in statuses:
        print(status)
    return 0


def _logs(args: argparse.Namespace) -> int:
    """Print a detached call's output (with --follow: then live, until it ends)."""
    endpoint = _call_endpoint(args.id)
    asyncio.run(_reachable(args))
    with _detached_session(args, endpoint) as session:
        call = session.call(args.id)
        if not args.follow:
            sys.stdout.write(call.logs())
            sys.stdout.flush()
            return 0
        for piece in call.logs(follow=True):
            sys.stdout.write(piece)
            sys.stdout.flush()
        status = call.status()
    print(f"colabremote: {args.id} {status.state}", file=sys.stderr)
    return 0 if status.state == "done" else 1


def _cancel(args: argparse.Namespace) -> int:
    """Interrupt a detached call, and say what happened."""
    endpoint = _call_endpoint(args.id)
    asyncio.run(_reachable(args))
    with _detached_session(args, endpoint) as session:
        status = session.call(args.id).cancel()
    what = {
        "cancelled": "cancelled",
        "running": "still running: it ignored the interrupt for 10 s",
    }.get(status.state, f"had already ended ({status.state}); nothing to cancel")
    print(f"{args.id}: {what}")
    return 0 if status.state != "running" else 1


_ENDPOINT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def _keep_alive_files(endpoint: str) -> tuple[str, str]:
    """Where a background keep-alive of ``endpoint`` keeps its process id and its output."""
    if not _ENDPOINT.fullmatch(endpoint):
        raise ConfigurationError(
            f"{endpoint!r} is not a runtime endpoint (`colabremote runtimes` lists them)"
        )
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(cache, "colabremote", "keep-alive")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return os.path.join(folder, f"{endpoint}.pid"), os.path.join(folder, f"{endpoint}.log")


def _background_pid(pid_file: str, endpoint: str) -> int | None:
    """The process id of the background keep-alive of ``endpoint`` while it runs, else None
    (a stale file, or a process id since given to another program, is removed)."""
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            os.unlink(pid_file)
        return None
    cmdline = f"/proc/{pid}/cmdline"
    if os.path.exists(cmdline):
        with open(cmdline, "rb") as f:
            words = f.read().split(b"\0")
        if b"keep-alive" not in words or endpoint.encode() not in words:
            with contextlib.suppress(OSError):
                os.unlink(pid_file)
            return None
    return pid


def _keep_alive_in_background(args: argparse.Namespace, interval: float) -> int:
    """Start ``keep-alive ENDPOINT`` as a process of its own session, detached from this
    terminal, its output in a log file; say how to stop it."""
    pid_file, log_file = _keep_alive_files(args.endpoint)
    running = _background_pid(pid_file, args.endpoint)
    if running is not None:
        print(f"a keep-alive of {args.endpoint} already runs in the background (pid {running})")
        return 0
    command = [sys.executable, "-m", "colabremote", "keep-alive", args.endpoint]
    command += ["--interval", repr(interval)]
    if getattr(args, "base_url", None):
        command += ["--base-url", args.base_url]
    pid = _spawn_detached(command, log_file)
    pending = f"{pid_file}.{pid}"
    with open(pending, "w") as f:
        f.write(f"{pid}\n")
    os.replace(pending, pid_file)
    print(
        f"keeping runtime {args.endpoint} alive in the background (pid {pid}, output "
        f"in {log_file}); stop it with `colabremote keep-alive {args.endpoint} --stop`"
    )
    return 0


def _spawn_detached(command: list[str], log_file: str) -> int:
    """Start ``command`` in a session of its own (no terminal: this one's Ctrl-C and hang-up do
    not reach it), stdin from /dev/null, output appended to ``log_file``; its process id."""
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        if hasattr(os, "posix_spawn"):
            actions = [
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
            ]
            return os.posix_spawn(
                command[0], command, os.environ, file_actions=actions, setsid=True
            )
        process = subprocess.Popen(  # noqa: S603 - this interpreter, our own command
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            creationflags=getattr(subprocess, "DETACHED_PROCESS", 0),
        )
        process.returncode = 0  # not ours to wait for: it outlives this command
        return process.pid
    finally:
        os.close(log)


def _stop_keep_alive(args: argparse.Namespace) -> int:
    """End the background keep-alive of ENDPOINT (SIGTERM, as Ctrl-C ends the foreground one)."""
    pid_file, _ = _keep_alive_files(args.endpoint)
    pid = _background_pid(pid_file, args.endpoint)
    if pid is None:
        print(
            f"colabremote: no keep-alive of {args.endpoint} runs in the background", file=sys.stderr
        )
        return 1
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped, when it was started from this process
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        os.unlink(pid_file)
    print(f"stopped the background keep-alive of {args.endpoint} (pid {pid})")
    return 0


def _keep_alive(args: argparse.Namespace) -> int:
    """Ping a runtime every --interval seconds until Ctrl-C or SIGTERM, so Colab does not
    reclaim it as idle; ends with status 1 when the runtime is gone. ``--background`` runs the
    same in a detached process, ``--stop`` ends that."""
    from ._validation import seconds

    interval = seconds("--interval", args.interval, example="60")
    assert interval is not None
    if args.stop:
        return _stop_keep_alive(args)

    async def ping_forever() -> None:
        control = _control(args, _credentials(args))
        try:
            if args.endpoint not in [a.endpoint for a in await control.list_assignments()]:
                raise RuntimeGone(
                    f"no Colab runtime {args.endpoint!r} is assigned to this account "
                    "(`colabremote runtimes` lists the ones that are)"
                )
            if args.background:
                return
            print(f"keeping runtime {args.endpoint} alive (Ctrl-C stops)", flush=True)
            while True:
                try:
                    await control.keep_alive(args.endpoint)
                except RuntimeGone:
                    raise
                except BackendError as exc:
                    # A blip (the network, Colab's front door), not the runtime's end: a job
                    # left running must not lose its keep-alive to it.
                    print(f"colabremote: a ping failed ({exc}); pinging on", file=sys.stderr)
                await asyncio.sleep(interval)
        finally:
            await control.aclose()

    asyncio.run(_reachable(args))
    if args.background:
        asyncio.run(ping_forever())  # only checks that the runtime is assigned
        return _keep_alive_in_background(args, interval)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(ping_forever())
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


async def _only_runtime(args: argparse.Namespace) -> str:
    """The endpoint of the account's one runtime; with none or several, say what to do."""
    control = _control(args, _credentials(args))
    try:
        endpoints: list[str] = [a.endpoint for a in await control.list_assignments()]
    finally:
        await control.aclose()
    if len(endpoints) == 1:
        return endpoints[0]
    if not endpoints:
        raise ConfigurationError(
            "no Colab runtime is assigned to this account; start one (a Session) first"
        )
    raise ConfigurationError(
        f"{len(endpoints)} runtimes are assigned ({', '.join(endpoints)}); name one: "
        "forward ENDPOINT PORT"
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _serve_emulator(emulator: ColabEmulator, args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM."""
    with emulator:
        token = emulator.mint_access_token(ttl=24 * 3600)
        print(f"A Colab emulator is serving at {emulator.url} (Ctrl-C stops it).")
        print("Run a script against it (the settings hold for that one command only):")
        print(f"  COLABREMOTE_BACKEND=colab COLABREMOTE_BASE_URL={emulator.url} \\")
        print(f"  COLABREMOTE_ACCESS_TOKEN={token} python your_script.py")
        print("The token is a test token, valid for 24 h. Sign-ins for this address are kept")
        print("apart from your Google sign-in, and no Google token is ever sent to it.")
        print("In code: cr.Session(backend='colab', base_url=...), or simply")
        print("cr.Session(backend='emulator'), which starts one of its own.", flush=True)
        if args.write_client_secrets:
            emulator.write_client_secrets(args.write_client_secrets)
            print(f"OAuth client file for `colabremote login`: {args.write_client_secrets}")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


async def _reachable(args: argparse.Namespace) -> None:
    """Fail at once, naming the address, when nothing listens at the base URL (instead of
    retrying each call against a closed port)."""
    if not args.base_url:
        return
    origin = _endpoints(args).origin
    parts = urlsplit(origin.url)
    assert parts.hostname is not None and parts.port is not None  # Origin.of checked both
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, parts.port), timeout=10
        )
    except (OSError, TimeoutError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timed out"
        raise ColabError(
            f"cannot reach {origin.url} ({args.base_url_setting}): {reason}. Is the emulator "
            "running (`colabremote emulator`)?"
        ) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _version() -> str:
    from . import __version__

    return f"colabremote {__version__}"


def parser() -> argparse.ArgumentParser:
    # The global options live in a parent parser shared by every command, so they are accepted
    # before or after the command name (SUPPRESS: a later one does not reset an earlier one).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--base-url",
        default=argparse.SUPPRESS,
        help="a Colab emulator's address (default: $COLABREMOTE_BASE_URL, else Google's)",
    )
    top = argparse.ArgumentParser(
        prog="colabremote",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    top.add_argument("--version", action="version", version=_version())
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    login = commands.add_parser(
        "login", parents=[common], help="sign in to Google", description="Sign in to Google."
    )
    mode = login.add_mutually_exclusive_group()
    mode.add_argument("--no-browser", action="store_true", help="print a URL, paste the code")
    mode.add_argument(
        "--adc",
        action="store_true",
        help="sign in with gcloud's Application Default Credentials (needs colabremote[adc])",
    )
    login.add_argument("--client-secrets", help="your OAuth client JSON (Desktop app)")
    simple = {
        "logout": "revoke and forget the stored sign-in",
        "whoami": "account, subscription and compute units",
    }
    for name, text in simple.items():
        commands.add_parser(name, parents=[common], help=text, description=text.capitalize())
    runtimes = commands.add_parser(
        "runtimes",
        parents=[common],
        help="list (or release) assigned runtimes",
        description="List the runtimes assigned to this account, or release them.",
    )
    runtimes.add_argument("action", nargs="?", choices=["release"], help="release runtimes")
    runtimes.add_argument("endpoint", nargs="?", help="the runtime to release")
    runtimes.add_argument("--all", action="store_true", help="release every runtime")
    secrets = commands.add_parser(
        "secrets",
        help="keep a secret for Session(secrets=[NAME]) in the OS keyring",
        description=(
            "Keep a secret (HF_TOKEN, WANDB_API_KEY, ...) in the OS keyring for "
            "Session(secrets=[NAME]), or forget it. `set` asks for the value without echo "
            "(or reads one line from stdin)."
        ),
    )
    secrets.add_argument("action", choices=["set", "delete"], help="store or forget")
    secrets.add_argument("name", help="the secret's name, as the kernel's variable: HF_TOKEN")
    shell = commands.add_parser(
        "shell",
        parents=[common],
        help="an interactive terminal on an assigned runtime",
        description=(
            "Open an interactive terminal (a shell) on an assigned Colab runtime: the only one, "
            "or ENDPOINT. It ends when the remote shell exits (type exit), and exits with the "
            "remote shell's exit status."
        ),
    )
    shell.add_argument("endpoint", nargs="?", help="the runtime (default: the only one assigned)")
    forward = commands.add_parser(
        "forward",
        parents=[common],
        help="reach a runtime's port from 127.0.0.1",
        description=(
            "Forward PORT of a Colab runtime (ENDPOINT, or the only one assigned) to "
            "http://127.0.0.1:<port>, HTTP and WebSockets, until Ctrl-C (or SIGTERM). The "
            "runtime is not released."
        ),
    )
    forward.add_argument("target", nargs="+", metavar="[ENDPOINT] PORT", help="what to forward")
    forward.add_argument(
        "--local-port", type=int, default=0, metavar="N", help="the local port (default: any free)"
    )
    emulator = commands.add_parser(
        "emulator",
        parents=[common],
        help="run a Colab emulator in the foreground",
        description="Run a Colab emulator on 127.0.0.1 until Ctrl-C (or SIGTERM).",
    )
    emulator.add_argument(
        "--write-client-secrets", metavar="FILE", help="an OAuth client file for login tests"
    )
    emulator.add_argument(
        "--verbose", action="store_true", help="log every request it serves on stderr"
    )
    emulator.add_argument(
        "--python",
        metavar="PATH",
        help="the runtimes' kernel interpreter, with ipykernel (default: this Python)",
    )
    calls = commands.add_parser(
        "calls",
        parents=[common],
        help="list the detached calls on a runtime",
        description="List the detached calls (f.spawn) on a Colab runtime (ENDPOINT, or the "
        "only one assigned): id, function, state, start and end.",
    )
    calls.add_argument("endpoint", nargs="?", metavar="ENDPOINT", help="the runtime")
    logs = commands.add_parser(
        "logs",
        parents=[common],
        help="print a detached call's output",
        description="Print the output of detached call ID; --follow: then live, until it ends.",
    )
    logs.add_argument("id", metavar="ID", help="the call's id (call.id)")
    logs.add_argument("--follow", "-f", action="store_true", help="stream until the call ends")
    cancel = commands.add_parser(
        "cancel",
        parents=[common],
        help="interrupt a detached call",
        description="Interrupt detached call ID on its runtime, and say what happened.",
    )
    cancel.add_argument("id", metavar="ID", help="the call's id (call.id)")
    keep_alive = commands.add_parser(
        "keep-alive",
        parents=[common],
        help="keep a runtime from being reclaimed as idle",
        description="Ping Colab runtime ENDPOINT as a notebook tab would, until Ctrl-C (or "
        "SIGTERM), so Colab does not reclaim it as idle while detached calls run; with "
        "--background, from a detached process until --stop.",
    )
    keep_alive.add_argument("endpoint", metavar="ENDPOINT", help="the runtime")
    keep_alive.add_argument(
        "--interval", type=float, default=60.0, metavar="S", help="seconds between pings (60)"
    )
    where = keep_alive.add_mutually_exclusive_group()
    where.add_argument(
        "--background",
        action="store_true",
        help="run in a detached process (output in ~/.cache/colabremote/keep-alive/) and return",
    )
    where.add_argument(
        "--stop", action="store_true", help="stop the background keep-alive of ENDPOINT"
    )
    return top


async def _run(args: argparse.Namespace) -> int:
    commands = {"login": _login, "logout": _logout, "whoami": _whoami, "runtimes": _runtimes}
    await _reachable(args)
    return await commands[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.base_url = getattr(args, "base_url", None)
    args.base_url_setting = "--base-url"
    if args.base_url is None:
        args.base_url = os.environ.get("COLABREMOTE_BASE_URL") or None
        args.base_url_setting = "COLABREMOTE_BASE_URL"
    for name in ("adc", "no_browser"):
        setattr(args, name, getattr(args, name, False))
    args.client_secrets = getattr(args, "client_secrets", None)
    # Commands that run in the foreground with their own loop; the rest share _run.
    foreground = {
        "emulator": _emulator,
        "secrets": _secrets,
        "shell": _shell,
        "forward": _forward,
        "calls": _calls,
        "logs": _logs,
        "cancel": _cancel,
        "keep-alive": _keep_alive,
    }
    try:
        command = foreground.get(args.command)
        if command is not None:
            return command(args)
        return asyncio.run(_run(args))
    except ColabRemoteError as exc:
        # One line says what to do; the traceback is for reporting a bug.
        if debugging():
            traceback.print_exception(exc)
        print(f"colabremote: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
