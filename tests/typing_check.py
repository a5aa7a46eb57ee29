"""Checked by mypy (not run): decorated functions keep their signatures."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

from typing_extensions import assert_type

import colabremote as cr


def scale(x: float, factor: int = 2) -> float:
    return x * factor


session = cr.Session(backend="local")
remote_scale = session.remote(scale)
assert_type(remote_scale(1.5), float)
assert_type(remote_scale.local(1.5, factor=3), float)
assert_type(remote_scale.submit(1.5), concurrent.futures.Future[float])
assert_type(remote_scale.map([1.0, 2.0]), Iterator[float])


@cr.remote
def greet(name: str) -> str:
    return f"hello {name}"


@cr.remote(timeout=10)
def count(items: list[int]) -> int:
    return len(items)


assert_type(greet("x"), str)
assert_type(count([1, 2]), int)


async def uses_aio() -> None:
    assert_type(await greet.aio("x"), str)


def wrong_types() -> None:
    greet(1)  # type: ignore[arg-type]
    count()  # type: ignore[call-arg]


# remote(fn, timeout=...) and s.remote(fn, timeout=...) keep the signature.
direct = cr.remote(scale, timeout=5)
assert_type(direct(1.0, factor=3), float)
direct("x")  # type: ignore[arg-type]
assert_type(session.remote(scale, timeout=5)(2.0), float)
assert_type(session.remote(timeout=5)(scale)(2.0, 3), float)


def session_options() -> None:
    # Each backend's options are part of the signature.
    cr.Session("jupyter", url="http://127.0.0.1:8888", token="t", kernel_name="python3")
    cr.Session("colab", gpu="T4", high_memory=True, keep_alive_seconds=60.0, api="v1beta")
    cr.AsyncSession("emulator", tpu="V28")
    cr.Session("local", python="/usr/bin/python3", cwd="/tmp")
    cr.Session("local", gpu="T4")  # type: ignore[call-overload]
    cr.Session("jupyter")  # type: ignore[call-overload]
    cr.Session("colab", api="v2")  # type: ignore[call-overload]


def session_methods(s: cr.Session) -> None:
    assert_type(s.info(), cr.SessionInfo)
    assert_type(s.runtime(), cr.RuntimeInfo)
    assert_type(s.exec("x = 1", timeout=5), None)
    s.upload("a.txt", "/content/a.txt", progress=False)
    s.exec(1)  # type: ignore[arg-type]


async def async_session_methods(s: cr.AsyncSession) -> None:
    assert_type(await s.info(), cr.SessionInfo)
    assert_type(await s.runtime(), cr.RuntimeInfo)
    await s.exec("x = 1", timeout=5)


# Refs and remote classes keep their types.
def kept_values(s: cr.Session) -> None:
    ref = s.put([1, 2])
    assert_type(ref, cr.Ref[list[int]])
    assert_type(ref.fetch(), list[int])
    assert_type(session.remote(scale).keep(1.0), cr.Ref[float])
    assert_type(session.remote(scale).keep.submit(1.0), concurrent.futures.Future[cr.Ref[float]])


class Model:
    def __init__(self, name: str) -> None:
        self.name = name

    def predict(self, x: float) -> float:
        return x


def remote_classes(s: cr.Session) -> None:
    remote_model = s.remote(Model)
    assert_type(remote_model, cr.RemoteClass[Model])
    assert_type(cr.remote(timeout=5)(Model), cr.RemoteClass[Model])
    handle = remote_model("bert")
    assert_type(handle, cr.RemoteInstance[Model])
    predict = handle.method(Model.predict)
    assert_type(predict(1.0), float)
    assert_type(predict.submit(1.0), concurrent.futures.Future[float])
    predict("x")  # type: ignore[arg-type]
    assert_type(remote_model.local("bert"), Model)


async def async_kept_values(s: cr.AsyncSession) -> None:
    assert_type(await s.put(1.0), cr.Ref[float])
    assert_type(await (await s.put("x")).fetch_async(), str)
