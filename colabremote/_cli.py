"""``colabremote``: sign in, see who you are, list and release runtimes, run an emulator.

    colabremote login [--no-browser | --adc] [--client-secrets FILE]
    colabremote logout
    colabremote whoami
    colabremote runtimes
    colabremote runtimes release ENDPOINT | --all
    colabremote emulator

``--base-url URL`` (or ``COLABREMOTE_BASE_URL``) points every command at a Colab emulator. Its
sign-in is kept apart from the Google one; plain http is accepted only to a loopback address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from .exceptions import ColabRemoteError, ConfigurationError


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
    return find_credentials(store=store, oauth=_oauth(args, store), use_adc=args.adc)


async def _login(args: argparse.Namespace) -> int:
    if args.adc:
        from ._colab.auth import GoogleOAuth, load_adc

        if args.base_url:
            raise ConfigurationError(
                f"--adc checks Application Default Credentials with Google; they are never sent "
                f"to another origin ({args.base_url_setting} is set)"
            )
        adc = load_adc()
        adc.use_tokeninfo(GoogleOAuth())
        await adc.token()  # checks the scopes; MissingScopes carries the gcloud command
        print("Application Default Credentials work; sessions use them with use_adc=True.")
        return 0
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


async def _whoami(args: argparse.Namespace) -> int:
    credentials = _credentials(args)
    control = _control(args, credentials)
    try:
        info = await control.user_info(consumption=True)
    finally:
        await control.aclose()
    account = getattr(credentials, "account", None) or "(account not known)"
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


def _emulator(args: argparse.Namespace) -> int:
    from .testing._emulator import ColabEmulator

    with ColabEmulator() as emulator:
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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="colabremote", description=__doc__.split("\n\n")[0])
    top.add_argument(
        "--base-url",
        help="a Colab emulator's address (default: $COLABREMOTE_BASE_URL, else Google's)",
    )
    commands = top.add_subparsers(dest="command", required=True)
    login = commands.add_parser("login", help="sign in to Google")
    mode = login.add_mutually_exclusive_group()
    mode.add_argument("--no-browser", action="store_true", help="print a URL, paste the code")
    mode.add_argument("--adc", action="store_true", help="use Application Default Credentials")
    login.add_argument("--client-secrets", help="your OAuth client JSON (Desktop app)")
    commands.add_parser("logout", help="revoke and forget the stored sign-in")
    commands.add_parser("whoami", help="account, subscription and compute units")
    runtimes = commands.add_parser("runtimes", help="list (or release) assigned runtimes")
    runtimes.add_argument("action", nargs="?", choices=["release"], help="release runtimes")
    runtimes.add_argument("endpoint", nargs="?", help="the runtime to release")
    runtimes.add_argument("--all", action="store_true", help="release every runtime")
    emulator = commands.add_parser("emulator", help="run a Colab emulator in the foreground")
    emulator.add_argument("--write-client-secrets", metavar="FILE", help="for `login` tests")
    for sub in (commands.choices["logout"], commands.choices["whoami"], runtimes):
        sub.set_defaults(adc=False, client_secrets=None)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.base_url_setting = "--base-url"
    if args.base_url is None:
        args.base_url = os.environ.get("COLABREMOTE_BASE_URL") or None
        args.base_url_setting = "COLABREMOTE_BASE_URL"
    if not hasattr(args, "adc"):
        args.adc = False
    if not hasattr(args, "client_secrets"):
        args.client_secrets = None
    commands = {
        "login": _login,
        "logout": _logout,
        "whoami": _whoami,
        "runtimes": _runtimes,
    }
    try:
        if args.command == "emulator":
            return _emulator(args)
        result: int = asyncio.run(commands[args.command](args))
        return result
    except ColabRemoteError as exc:
        print(f"colabremote: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
