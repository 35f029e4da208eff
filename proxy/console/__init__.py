"""Commands that talk to a running sidecar through its admin port (``status``)."""
