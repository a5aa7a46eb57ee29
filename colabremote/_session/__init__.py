"""A session's machinery: ``core`` (one kernel's lifecycle and calls, on the private event
loop) and ``exit`` (nothing left running at interpreter exit). The public classes built on it
are in ``colabremote/_api.py``; the default session in ``colabremote/_default.py``."""
