"""Answering a retried insert that the upstream refuses as a duplicate with the resource itself.

A POST whose body names its own id (a Google Calendar event ``id``) may be retried after a
timeout or a 5xx: the first attempt may have created the event already, and the repeat then
gets 409 ``duplicate``. Relaying that 409 would tell the app its insert failed when it
succeeded. So, on a retry only, the sidecar GETs ``<request path>/<id>`` (query kept, the
client's credentials kept, no body) through the same upstream and relays that answer when it
is a 2xx: what the first attempt would have answered. Anything else (the GET fails, times out
or is not 2xx) relays the original 409 unchanged: the sidecar never invents a success. A 409
whose body names another reason than ``duplicate`` is relayed without a lookup. The lookup is
not an attempt: it feeds neither the breaker nor the retry budget.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import ClientResponse, web

from proxy.errors import ProxyError
from proxy.web.forward import UpstreamClient, open_response

DUPLICATE_HEADER = "X-Resilience-Duplicate"
"""``fetched``: the answer is the GET of a resource a retried insert found already created."""


def resource_url(url: str, key: str) -> str:
    """``https://host/calendars/c/events?alt=json`` and ``abc`` -> ``https://host/calendars/c/events/abc?alt=json``."""
    path, sep, query = url.partition("?")
    return f"{path.rstrip('/')}/{quote(key, safe='')}{sep}{query}"


async def fetch_created(client: UpstreamClient, request: web.BaseRequest, url: str, key: str,
                        timeout: float) -> ClientResponse | None:
    """The upstream's 2xx answer for the resource ``key`` under ``url``; None when there is none."""
    try:
        answer = await open_response(client, request, resource_url(url, key), None, timeout, method="GET")
    except ProxyError:
        return None
    if 200 <= answer.status < 300:
        return answer
    answer.release()
    return None
