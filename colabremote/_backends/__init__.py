"""Where kernels come from: this machine (``local``), any Jupyter server (``jupyter``)."""
