"""Refs: values kept on the kernel (``s.put``, ``f.keep``), passed to calls as keys, fetched,
freed; on the local backend, with one session for the module."""

from __future__ import annotations

import asyncio
import copy
import gc
import io
import pickle
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import colabremote as cr
from colabremote._serialization import _ClientPickler
from colabremote.exceptions import ConnectionLost, RefLost, ResultRefused


def kept_count() -> int:
    """Runs on the kernel: how many values its object table keeps."""
    import sys

    table = sys.modules.get("_colabremote_kept")
    return len(table.objects) if table is not None else 0


def object_id(value: Any) -> int:
    return id(value)


def total(values: Any) -> float:
    return float(np.sum(values))


def unpack(nested: dict[str, Any]) -> list[int]:
    return [id(nested["one"]), id(nested["many"][0]), id(nested["many"][1])]


def doubled(x: int) -> int:
    return 2 * x


class Opaque:
    """Not plain data: an untrusted kernel's copy is refused."""

    def __init__(self, value: int) -> None:
        self.value = value


def make_opaque(value: int) -> Opaque:
    return Opaque(value)


@pytest.fixture(scope="module")
def s() -> Iterator[cr.Session]:
    with cr.Session("local", progress=False) as session:
        yield session


def wait_kept(s: cr.Session, expected: int, timeout: float = 10.0) -> None:
    """Until the kernel keeps ``expected`` values (frees travel in batches, off the call path)."""
    gc.collect()  # values of earlier tests' refs caught in reference cycles go too
    count = s.remote(kept_count)
    deadline = time.monotonic() + timeout
    while (current := count()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"the kernel keeps {current} values, not {expected}")
        time.sleep(0.02)


def test_a_put_value_stays_on_the_kernel_and_is_passed_by_key(s: cr.Session) -> None:
    array = np.arange(1_000_000, dtype=np.float64)
    ref = s.put(array)
    where = s.remote(object_id)
    # The same object on the kernel every time: the value was not sent again.
    assert where(ref) == where(ref)
    assert s.remote(total)(ref) == float(array.sum())
    np.testing.assert_array_equal(ref.fetch(), array)
    assert ref.type_name == "numpy.ndarray"
    ref.free()


def test_a_ref_pickles_as_a_key_of_a_few_bytes(s: cr.Session) -> None:
    ref = s.put(b"x" * 10_000_000)
    stream = io.BytesIO()
    _ClientPickler(stream, by_value=frozenset(), allow_bytecode=True).dump([{"r": ref}])
    assert len(stream.getvalue()) < 300


def test_refs_nested_in_lists_and_dicts_arrive_as_their_values(s: cr.Session) -> None:
    one, other = s.put([1]), s.put([2])
    where = s.remote(object_id)
    ids = s.remote(unpack)({"one": one, "many": [other, one]})
    assert ids == [where(one), where(other), where(one)]


def test_keep_returns_refs_from_every_way_to_call(s: cr.Session) -> None:
    kept = s.remote(doubled).keep
    first = kept(21)
    assert isinstance(first, cr.Ref)
    assert (first.type_name, first.fetch()) == ("builtins.int", 42)
    assert kept.submit(1).result().fetch() == 2
    assert [r.fetch() for r in kept.map([3, 4])] == [6, 8]
    assert asyncio.run(kept.aio(5)).fetch() == 10
    limited = kept.with_options(timeout=30)
    assert limited.timeout == 30
    assert limited(6).fetch() == 12
    # A kept result is an argument like any ref.
    assert s.remote(doubled)(first) == 84  # type: ignore[arg-type]


def test_fetch_async(s: cr.Session) -> None:
    ref = s.put({"a": 1})

    async def main() -> Any:
        return await ref.fetch_async()

    assert asyncio.run(main()) == {"a": 1}


def test_free_and_with_blocks_forget_the_value_on_the_kernel(s: cr.Session) -> None:
    wait_kept(s, 0)
    ref = s.put("value")
    with s.put("other") as scoped:
        assert scoped.fetch() == "other"
    wait_kept(s, 1)
    ref.free()
    ref.free()  # once is enough; twice is harmless
    wait_kept(s, 0)
    assert ref.freed
    made_here = r"builtins\.str \(put\(\) at test_state_refs\.py:\d+\) was freed"
    with pytest.raises(RefLost, match=made_here):
        ref.fetch()


def test_dropped_refs_are_freed_on_the_kernel(s: cr.Session) -> None:
    wait_kept(s, 0)
    refs = [s.put(i) for i in range(5)]
    refs.append(s.remote(doubled).keep(1))
    wait_kept(s, 6)
    del refs
    wait_kept(s, 0)


def test_a_freed_ref_in_a_call_fails_before_anything_is_sent(s: cr.Session) -> None:
    ref = s.put(1)
    ref.free()
    f = s.remote(doubled)
    with pytest.raises(RefLost, match="was freed"):
        f([ref])  # type: ignore[arg-type]
    assert f(2) == 4


@pytest.mark.slow
def test_a_ref_of_another_session_is_refused_and_fetch_obeys_trust(s: cr.Session) -> None:
    ref = s.put(3)
    with cr.Session("local", progress=False, trust_kernel=False) as untrusting:
        with pytest.raises(RefLost, match="belongs to <Session"):
            untrusting.remote(doubled)(ref)  # type: ignore[arg-type]
        plain = untrusting.put([1.5, "text"])
        assert plain.fetch() == [1.5, "text"]
        opaque = untrusting.remote(make_opaque).keep(7)
        assert opaque.type_name.endswith("Opaque")
        with pytest.raises(ResultRefused):
            opaque.fetch()


def test_repr_names_id_type_and_session_but_never_the_value(s: cr.Session) -> None:
    ref = s.put("hunter2-secret")
    text = repr(ref)
    assert "hunter2" not in text
    assert text.startswith(f"<Ref {ref.key} builtins.str session=<Session backend='local'")
    ref.free()
    assert " freed " in repr(ref)


def test_a_ref_does_not_pickle_or_copy_outside_a_call(s: cr.Session) -> None:
    ref = s.put(1)
    with pytest.raises(TypeError, match="fetch"):
        pickle.dumps(ref)
    assert copy.copy(ref) is ref
    assert copy.deepcopy([ref])[0] is ref


def test_a_ref_in_a_closure_travels_as_a_key(s: cr.Session) -> None:
    ref = s.put(10)

    def plus_kept(x: int) -> int:
        return x + ref  # type: ignore[operator]

    assert s.remote(plus_kept)(1) == 11


def test_kept_values_outlive_the_agent_of_a_lost_connection(s: cr.Session) -> None:
    """A new client on the same kernel installs a new agent; the object table is the kernel's,
    so refs made through the old one still resolve."""
    ref = s.put([1, 2])
    client = s._core.client
    assert client is not None

    async def lose_it() -> None:
        client.fail_all(ConnectionLost("lost for the test"))

    s._loop.run(lose_it())
    assert ref.fetch() == [1, 2]
    assert s._core.client is not client


@pytest.mark.slow
def test_async_session_put() -> None:
    async def main() -> tuple[float, str]:
        async with cr.AsyncSession("local", progress=False) as session:
            ref = await session.put(np.ones(4))
            return await session.remote(total).aio(ref), (await ref.fetch_async()).dtype.name

    assert asyncio.run(main()) == (4.0, "float64")


def test_a_detached_call_takes_refs_as_keys_and_refuses_a_freed_one(s: cr.Session) -> None:
    array = np.arange(1000, dtype=np.float64)
    ref = s.put(array)
    where = s.remote(object_id)
    call = where.spawn(ref)
    assert call.result(timeout=60) == where(ref)  # the kept object itself, not a copy
    ref.free()
    with pytest.raises(RefLost, match="was freed"):
        where.spawn(ref)
