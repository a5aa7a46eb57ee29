"""colabremote in one file: run a function on a Colab runtime, watch its output live, get its
result.

Run: python examples/quickstart.py
It uses backend="emulator": a Colab emulator on this machine (sign-in, runtime assignment,
keep-alive, the runtime proxy), so no Google account is needed. For real Colab, sign in once
with `colabremote login --adc` (docs/auth.md) and use backend="colab".
"""

from __future__ import annotations

import math
import time

import colabremote as cr


def count_primes(limit: int) -> int:
    """Count primes below ``limit``, printing progress as it goes (shown here, live)."""
    count = 0
    for n in range(2, limit):
        if all(n % d for d in range(2, math.isqrt(n) + 1)):
            count += 1
        if n % (limit // 4) == 0:
            print(f"  checked {n:,} numbers, {count:,} primes so far", flush=True)
            time.sleep(0.2)
    return count


def check_positive(x: float) -> float:
    if x <= 0:
        raise ValueError(f"expected a positive number, got {x}")
    return math.sqrt(x)


def main() -> None:
    with cr.Session(backend="emulator", gpu="T4") as session:
        info = session.info()
        runtime = info.details
        print(f"runtime {runtime['endpoint']} ({runtime['accelerator']}): Python {info.python}")

        primes = session.remote(count_primes)
        print(f"primes below 200,000: {primes(200_000):,}")

        roots = session.remote(check_positive)
        print("square roots:", [round(r, 3) for r in roots.map([1, 2, 3, 4])])
        try:
            roots(-1)
        except ValueError as error:  # raised remotely, re-raised here as itself
            print(f"remote error came home as ValueError: {error}")


if __name__ == "__main__":
    main()
