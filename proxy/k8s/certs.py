"""The injector's serving certificate: reloaded when its files change, its expiry known.

cert-manager renews the Secret and the kubelet swaps the mounted files in place (a ``..data`` symlink);
an injector that read them once would keep serving the old certificate until it expires, and with
``failurePolicy: Ignore`` pods would then start without the sidecar, silently. So the files are hashed
every poll (as :mod:`proxy.config.running` does for the config) and, when they change, loaded into a
*new* context: a key that does not match its certificate (the two files read across a swap) is
refused and the old pair keeps serving until the next poll sees both new files. The listening context
hands each new handshake the current pair through its SNI callback (called with or without SNI).
"""

from __future__ import annotations

import calendar
import hashlib
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("resilience_proxy.k8s.certs")


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    """A TLS >= 1.2 server context with the key pair loaded (``ssl.SSLError``/``OSError`` if it does not)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def not_after(pem: bytes) -> float:
    """The expiry (unix seconds) of the first certificate in ``pem``; ValueError if there is none.

    Read from the DER: Certificate -> tbsCertificate -> validity -> notAfter (the standard library
    has no public parser, and this is the one field needed)."""
    text = pem.decode("ascii", "replace")
    begin = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", begin)
    if begin < 0 or end < 0:
        raise ValueError("no PEM certificate")
    der = ssl.PEM_cert_to_DER_cert(text[begin:end + len("-----END CERTIFICATE-----")])
    try:
        certificate = _children(_children(der)[0][1])  # tbsCertificate, signatureAlgorithm, signature
        tbs = _children(certificate[0][1])
        fields = tbs[1:] if tbs[0][0] == 0xA0 else tbs  # [0] version is optional
        validity = _children(fields[3][1])  # serialNumber, signature, issuer, validity
        tag, value = validity[1]
        stamp = value.decode("ascii")
    except (IndexError, UnicodeDecodeError) as error:
        raise ValueError(f"malformed certificate: {error}") from error
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ: 50-99 are 19xx (RFC 5280)
        stamp = ("19" if int(stamp[:2]) >= 50 else "20") + stamp
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError(f"notAfter has tag {tag:#x}")
    return float(calendar.timegm(time.strptime(stamp, "%Y%m%d%H%M%SZ")))


def _children(der: bytes) -> list[tuple[int, bytes]]:
    """The (tag, contents) of the DER elements in ``der``, or of the contents of its one SEQUENCE."""
    items: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(der):
        tag, length = der[offset], der[offset + 1]
        offset += 2
        if length & 0x80:
            size = length & 0x7F
            length = int.from_bytes(der[offset:offset + size], "big")
            offset += size
        items.append((tag, der[offset:offset + length]))
        offset += length
    return items


class ServingCertificate:
    """The key pair the injector serves, reloaded by :meth:`reload_if_changed` when its files change."""

    def __init__(self, cert: str, key: str, on_load: Callable[[float], None] = lambda expiry: None,
                 on_failure: Callable[[], None] = lambda: None) -> None:
        """Load the pair now (raising ``ssl.SSLError``/``OSError``/``ValueError``: the injector cannot start)."""
        self.cert, self.key = cert, key
        self._on_load, self._on_failure = on_load, on_failure
        self._seen = self.fingerprint()
        self.current = server_ssl_context(cert, key)
        self.expiry = not_after(Path(cert).read_bytes())
        self.listening = self.current
        self.listening.sni_callback = self._select
        on_load(self.expiry)

    def _select(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                context: ssl.SSLContext) -> None:
        if connection.context is not self.current:
            connection.context = self.current

    def fingerprint(self) -> str:
        """A hash of both files' content (an unreadable file hashes as such)."""
        digest = hashlib.sha256()
        for path in (self.cert, self.key):
            try:
                digest.update(Path(path).read_bytes())
            except OSError as error:
                digest.update(f"unreadable: {error.errno}".encode())
            digest.update(b"\0")
        return digest.hexdigest()

    def reload_if_changed(self) -> bool:
        """Load the files if they changed since the last attempt; True when a new pair now serves."""
        seen = self.fingerprint()
        if seen == self._seen:
            return False
        self._seen = seen  # tried once per version: a broken pair is not retried until it changes again
        try:
            context = server_ssl_context(self.cert, self.key)
            expiry = not_after(Path(self.cert).read_bytes())
        except (OSError, ssl.SSLError, ValueError) as error:
            self._on_failure()
            log.warning("serving certificate not reloaded, the previous one keeps serving: %s", error,
                        extra={"cert": self.cert, "key": self.key})
            return False
        context.sni_callback = self._select
        self.current, self.expiry = context, expiry
        self._on_load(expiry)
        log.info("serving certificate reloaded", extra={"not_after": _iso(expiry)})
        return True


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
