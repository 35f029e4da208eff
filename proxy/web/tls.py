"""The trust store for TLS toward an upstream: the system's CAs, plus the upstream's ``ca_bundle``.

``ssl.create_default_context(cafile=...)`` loads *only* that file (the system's CAs are loaded
only when no CA argument is given), so a ``ca_bundle`` written for a private upstream would stop
every public certificate from verifying. ``ca_bundle`` adds to the system store, as the README says;
the forwarder and ``doctor`` take their TLS settings from :func:`upstream_ssl` so that they can never disagree.
"""

from __future__ import annotations

import ssl
from typing import Literal


def upstream_ssl(ca_bundle: str | None) -> ssl.SSLContext | Literal[True]:
    """What an upstream's TLS is verified with: without a ``ca_bundle``, ``True``, the default verifying
    context (the system's CAs, hostname checked) that aiohttp (and asyncio, for ``doctor``) uses for it;
    with one, :func:`upstream_context`.

    aiohttp loads the system's ~150 CAs into its default context when it is imported; a context of our
    own would load them again (tens of milliseconds and ~0.8 MB per upstream, before the sidecar is ready)."""
    return upstream_context(ca_bundle) if ca_bundle else True


def upstream_context(ca_bundle: str | None) -> ssl.SSLContext:
    """A verifying client context (hostname checked) trusting the system's CAs and ``ca_bundle``'s.

    Raises ``OSError``/``ssl.SSLError`` when the bundle cannot be read or holds no certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context
