import pytest

from proxy.config import values
from proxy.config.model import Address


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25), ("30s", 30.0), ("15m", 900.0), ("1h", 3600.0), ("1m30s", 90.0), ("1.5s", 1.5), ("7d", 604800.0), ("1d12h", 129600.0),
])
def test_durations_users_write(text: str, seconds: float) -> None:
    assert values.duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", [30, "30", "10 s", "1w", "", "s", True, None, "-1s"])
def test_durations_without_a_unit_or_with_an_unknown_one_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        values.duration(bad)


@pytest.mark.parametrize(("text", "size"), [(1024, 1024), ("1MiB", 2**20), ("512KiB", 512 * 1024), ("10MB", 10**7)])
def test_sizes(text: object, size: int) -> None:
    assert values.size(text) == size


@pytest.mark.parametrize(("text", "address"), [
    ("127.0.0.1:8080", Address("127.0.0.1", 8080)), ("[::1]:9901", Address("::1", 9901)),
    ("localhost:0", Address("localhost", 0)),
])
def test_addresses(text: str, address: Address) -> None:
    assert values.address(text) == address


@pytest.mark.parametrize("bad", ["8080", "127.0.0.1", "127.0.0.1:99999", ":80", 8080])
def test_bad_addresses(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid address"):
        values.address(bad)


def test_upstream_url_keeps_base_path_without_trailing_slash() -> None:
    assert values.upstream_url("https://www.googleapis.com/calendar/v3/") == "https://www.googleapis.com/calendar/v3"


@pytest.mark.parametrize("bad", ["api.twilio.com", "ftp://x", "https://", "https://u:p@x", "https://x?y=1"])
def test_bad_upstream_urls(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid url"):
        values.upstream_url(bad)
