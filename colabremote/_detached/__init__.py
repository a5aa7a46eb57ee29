"""Detached calls: ``f.spawn(...)`` runs a call that outlives this process; ``s.call(id)``
attaches to one from anywhere that reaches its runtime; ``s.calls()`` lists them.

``public.py`` holds what users see (imported with ``colabremote``); ``calls.py`` does the work
and ``files.py`` reads the runtime's files (both imported on first use: they bring the backends).
"""
