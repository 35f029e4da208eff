import pytest

from proxy.config.model import Upstream
from proxy.errors import NoRoute, NotAProxyTarget
from proxy.policy.routing import Router


def upstream(name: str, url: str, prefix: str) -> Upstream:
    return Upstream(name=name, url=url, prefix=prefix, timeout=1, connect_timeout=1, max_request_body=1,
                    max_connections=1, ca_bundle=None, forwarded_headers=False, strip_headers=(), source="t")


ROUTER = Router([
    upstream("google", "https://www.googleapis.com", "/google"),
    upstream("calendar", "https://calendar.example/calendar/v3", "/google/calendar"),
    upstream("twilio", "https://api.twilio.com", "/twilio"),
])


@pytest.mark.parametrize(("target", "name", "url"), [
    ("/twilio/2010-04-01/Accounts.json", "twilio", "https://api.twilio.com/2010-04-01/Accounts.json"),
    ("/twilio", "twilio", "https://api.twilio.com"),
    ("/twilio?PageSize=1", "twilio", "https://api.twilio.com?PageSize=1"),
    ("/google/calendar/calendars/team%20cal%40example.com/events?key=K%2B&q=a+b", "calendar",
     "https://calendar.example/calendar/v3/calendars/team%20cal%40example.com/events?key=K%2B&q=a+b"),
    ("/google/drive/v3/files", "google", "https://www.googleapis.com/drive/v3/files"),
])
def test_longest_prefix_wins_and_target_is_kept_byte_for_byte(target: str, name: str, url: str) -> None:
    chosen, forwarded, _ = ROUTER.resolve("GET", target)
    assert (chosen.name, forwarded) == (name, url)


@pytest.mark.parametrize("target", ["/twilioX/a", "/", "/nothing", "/Twilio/a"])
def test_unknown_prefix_is_no_route(target: str) -> None:
    with pytest.raises(NoRoute):
        ROUTER.resolve("GET", target)


@pytest.mark.parametrize(("method", "target", "status"), [
    ("GET", "http://evil.example/steal", 400),
    ("CONNECT", "evil.example:443", 405),
    ("GET", "/twilio/../google/x", 400),
    ("GET", "/twilio/%2e%2e/x", 400),
    ("GET", "/twilio/./x", 400),
])
def test_open_proxy_targets_are_refused(method: str, target: str, status: int) -> None:
    with pytest.raises(NotAProxyTarget) as caught:
        ROUTER.resolve(method, target)
    assert caught.value.status == status


def test_dots_inside_names_are_fine() -> None:
    assert ROUTER.resolve("GET", "/twilio/v1/Messages.json?x=..").url == "https://api.twilio.com/v1/Messages.json?x=.."


@pytest.mark.parametrize(("target", "path"), [
    ("/twilio/2010-04-01/Accounts/AC1/Messages.json?To=x", "/2010-04-01/Accounts/AC1/Messages.json"),
    ("/twilio", "/"), ("/twilio?x=1", "/"), ("/google/calendar/calendars/a%40b/events", "/calendars/a%40b/events"),
])
def test_the_path_after_the_prefix_is_what_routes_match(target: str, path: str) -> None:
    assert ROUTER.resolve("GET", target).path == path
