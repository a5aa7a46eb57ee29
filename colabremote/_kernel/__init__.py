"""Speaking the Jupyter messaging protocol: transports, the kernel client and the remote agent."""
