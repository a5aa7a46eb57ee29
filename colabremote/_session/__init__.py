"""Sessions, in layers: ``core`` (one kernel's lifecycle and calls, on the private event loop),
``exit`` (nothing left running at interpreter exit), ``api`` (AsyncSession, and Session derived
from it) and ``default`` (the session ``@colabremote.remote`` uses without ``session=``).

This file imports nothing, so importing ``core`` does not pull in the layers above it.
"""
