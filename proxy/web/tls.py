"""The trust store for TLS toward an upstream: the system's CAs, plus the upstream's ``ca_bundle``.

``ssl.create_default_context(cafile=...)`` loads *only* that file (the system's CAs are loaded
only when no CA argument is given), so a ``ca_bundle`` written for a private upstream would stop
every public certificate from verifying. ``ca_bundle`` adds to the system store, as the README says;
the forwarder and ``doctor`` build their contexts here so that they can never disagree.
"""

from __future__ import annotations

import ssl


def upstream_context(ca_bundle: str | None) -> ssl.SSLContext:
    """A verifying client context (hostname checked) trusting the system's CAs and ``ca_bundle``'s.

    Raises ``OSError``/``ssl.SSLError`` when the bundle cannot be read or holds no certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context
