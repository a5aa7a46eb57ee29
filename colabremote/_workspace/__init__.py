"""The runtime as a workspace: what a session prepares on the kernel besides running calls."""
