"""The kernelspec manager the emulator's jupyter_servers use: kernels see ``google.colab``.

Loaded inside each runtime's jupyter_server process
(``--ServerApp.kernel_spec_manager_class``); ``--ColabSiteKernelSpecManager.colab_site=<dir>``
names the directory that holds the emulator's ``google.colab`` package, which is put first on
the kernels' PYTHONPATH; ``--ColabSiteKernelSpecManager.kernel_python=<path>`` runs the kernels in
another interpreter (one with ipykernel), as Colab's runtime may be another Python version.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from traitlets import Unicode


class ColabSiteKernelSpecManager(KernelSpecManager):
    """Adds the emulator's site directory to every kernel's PYTHONPATH."""

    colab_site = Unicode("", config=True, help="Directory holding the google.colab package.")
    kernel_python = Unicode(
        "", config=True, help="The kernels' interpreter (default: the server's)."
    )

    def get_kernel_spec(self, kernel_name: str) -> Any:
        spec = super().get_kernel_spec(kernel_name)
        python = str(self.kernel_python)
        if python and spec.argv:
            spec.argv = [python, *spec.argv[1:]]
        site = str(self.colab_site)
        if site:
            env = dict(spec.env or {})
            inherited = env.get("PYTHONPATH") or os.environ.get("PYTHONPATH", "")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (site, inherited) if p)
            spec.env = env
        return spec
