"""Commands that read and operate a running sidecar through its admin port (``status``, ``breakers``), as an
operator would with curl.

They talk HTTP to the admin API only (``proxy.ctl.admin``), never to Redis or the sidecar's internals, so they
work against any replica that the operator can reach (``kubectl port-forward`` included) and see exactly what
that replica serves.
"""
