"""What loaders may read and fetch: URL host policy, a bounded HTTP fetch, allowed path roots.

Used by the built-in loaders (``pg_mmretrieval_plugins.loaders``) and available to loader
plugins.  The policy (docs/security.md, "What the worker may read and fetch"):

* URLs: only the allowed schemes (http, https), checked on the first URL and on every
  redirect (at most ``url_max_redirects``).  The host name is resolved once per hop and every
  address it resolves to is checked; the connection goes to a checked address (no second
  resolution, so no DNS-rebinding gap).  Link-local, cloud metadata, unspecified, multicast,
  broadcast and reserved addresses are always refused; loopback, private and other
  non-global addresses are refused unless ``url_allow_hosts`` lists them (or a name that
  resolves to them); a non-empty ``url_allow_hosts`` admits only what it lists.
* A whole URL item (connects, redirects, headers, body) must finish within
  ``url_deadline_s``; a watchdog shuts the socket down when it passes.
* Paths: :mod:`pg_mmretrieval.safepath` (re-exported here): resolved with symlinks and ``..``
  and read only inside one of ``path_roots``.

Over 400 lines on purpose: the URL policy, the pinned connections, the watchdog and the hop
loop share one deadline and one set of refusals, and read best together.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .errors import ConfigError, PermanentLoadError, RetryableLoadError
from .safepath import read_path, resolve_path

if TYPE_CHECKING:
    from .loaders import LoadLimits

__all__ = [
    "ALWAYS_DENIED_NAMES",
    "ALWAYS_DENIED_NETWORKS",
    "HostList",
    "check_address",
    "fetch_url",
    "parse_host_list",
    "read_path",
    "resolve_path",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: never fetched, whatever the settings: link-local (incl. the cloud metadata address
#: 169.254.169.254), other clouds' metadata addresses, unspecified, multicast, broadcast and
#: reserved ranges
ALWAYS_DENIED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "169.254.0.0/16",
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "192.0.0.192/32",  # Oracle Cloud metadata
        "224.0.0.0/4",
        "240.0.0.0/4",  # reserved, with the broadcast address 255.255.255.255
        "::/128",
        "fe80::/10",
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "ff00::/8",
    )
)
#: host names never fetched (they name metadata services; their addresses are refused too)
ALWAYS_DENIED_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECTS = {301, 302, 303, 307, 308}
_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}
_CHUNK = 64 * 1024
_S = TypeVar("_S", bound=socket.socket)


@dataclass(frozen=True)
class HostList:
    """Parsed ``url_allow_hosts`` / ``url_deny_hosts``: host name patterns and networks."""

    names: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.names or self.networks)

    def matches_name(self, host: str) -> bool:
        for pattern in self.names:
            if pattern.startswith("*."):
                if host.endswith(pattern[1:]) and host != pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False

    def contains(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)


def parse_host_list(entries: Iterable[str], setting: str) -> HostList:
    """Split entries into networks (``10.0.0.0/8``, ``::1``) and host names (``*.x.org``).

    Raises:
        ConfigError: an entry is neither (e.g. a URL).
    """
    names: list[str] = []
    networks: list[IPNetwork] = []
    for raw in entries:
        entry = raw.strip().lower().rstrip(".")
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        label = entry[2:] if entry.startswith("*.") else entry
        if not label or not all(
            part and all(c.isalnum() or c in "-_" for c in part) for part in label.split(".")
        ):
            raise ConfigError(
                f"{setting}: {raw!r} is neither a host name (img.example.com, *.example.com) "
                "nor an address or network (127.0.0.1, 10.0.0.0/8, ::1)"
            )
        names.append(entry)
    return HostList(tuple(names), tuple(networks))


def _plain(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped or NAT64 IPv6 address, else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def check_address(ip: IPAddress, host: str, limits: LoadLimits) -> str | None:
    """Why ``ip`` (an address ``host`` resolved to) must not be fetched, or None if it may."""
    allow = parse_host_list(limits.url_allow_hosts, "MMR_URL_ALLOW_HOSTS")
    deny = parse_host_list(limits.url_deny_hosts, "MMR_URL_DENY_HOSTS")
    plain = _plain(ip)
    if any(plain.version == n.version and plain in n for n in ALWAYS_DENIED_NETWORKS):
        return (
            f"address {ip} is link-local, a cloud metadata service, unspecified, multicast, "
            "broadcast or reserved: always refused"
        )
    if deny.contains(plain) or deny.contains(ip):
        return f"address {ip} is denied by MMR_URL_DENY_HOSTS"
    if allow:
        if allow.matches_name(host) or allow.contains(plain) or allow.contains(ip):
            return None
        return f"address {ip} is not in MMR_URL_ALLOW_HOSTS"
    if not plain.is_global:
        return (
            f"address {ip} is loopback, private or otherwise not global: refused unless "
            "MMR_URL_ALLOW_HOSTS (mmr worker --url-allow-host) lists it"
        )
    return None


def _check_url(url: str, limits: LoadLimits, what: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in limits.allowed_schemes:
        hint = (
            "; file:// URLs are read only by the path and auto kinds, under MMR_PATH_ROOTS"
            if scheme == "file"
            else ""
        )
        raise PermanentLoadError(
            f"{what}: URL scheme {scheme or '(none)'!r} is not allowed in {url!r} "
            f"(allowed: {', '.join(sorted(limits.allowed_schemes))}){hint}"
        )
    try:
        parts.port  # noqa: B018 - raises on an invalid port
    except ValueError:
        raise PermanentLoadError(f"{what}: {url!r} has an invalid port") from None
    if not parts.hostname:
        raise PermanentLoadError(f"{what}: {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise PermanentLoadError(f"{what}: {url!r} carries credentials; they are not sent")
    return parts


def _resolve(host: str, port: int, limits: LoadLimits, what: str) -> list[IPAddress]:
    """The checked addresses of ``host``; raises if the name or any address is refused."""
    deny = parse_host_list(limits.url_deny_hosts, "MMR_URL_DENY_HOSTS")
    if host in ALWAYS_DENIED_NAMES:
        raise PermanentLoadError(f"{what}: host {host!r} names a metadata service: refused")
    if deny.matches_name(host):
        raise PermanentLoadError(f"{what}: host {host!r} is denied by MMR_URL_DENY_HOSTS")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        # unknown host names are usually permanent, but DNS outages pass: retry
        raise RetryableLoadError(f"{what}: cannot resolve the host {host!r}: {e}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        reason = check_address(ip, host, limits)
        if reason is not None:
            raise PermanentLoadError(f"{what}: host {host!r} refused before connecting: {reason}")
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise RetryableLoadError(f"{what}: the host {host!r} resolved to no address")
    return addresses


def _open_socket(addresses: list[IPAddress], port: int, timeout: float) -> socket.socket:
    error: OSError | None = None
    for ip in addresses:
        try:
            return socket.create_connection((str(ip), port), timeout)
        except OSError as e:
            error = e
    assert error is not None
    raise error


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to an already checked address (the Host header keeps the name)."""

    def __init__(
        self, host: str, port: int, addresses: list[IPAddress], timeout: float, dog: _Watchdog
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses
        self._dog = dog

    def connect(self) -> None:
        self.sock = self._dog.watch(
            _open_socket(self._addresses, self.port, float(self.timeout or 1.0))
        )


class _PinnedHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection to a checked address; the certificate is verified for the name."""

    def __init__(
        self, host: str, port: int, addresses: list[IPAddress], timeout: float, dog: _Watchdog
    ) -> None:
        self._ssl = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._ssl)
        self._addresses = addresses
        self._dog = dog

    def connect(self) -> None:
        raw = self._dog.watch(_open_socket(self._addresses, self.port, float(self.timeout or 1.0)))
        try:
            self.sock = self._dog.watch(self._ssl.wrap_socket(raw, server_hostname=self.host))
        except BaseException:
            raw.close()
            raise


class _Watchdog:
    """Shuts the current socket down when the item's deadline passes.

    The socket is watched itself, not the connection: http.client hands it over to the
    response (``conn.sock`` is then None) when the server closes after the answer.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self.sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: _S) -> _S:
        with self._lock:
            self.sock = sock
            if self.expired:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        return sock

    def unwatch(self) -> None:
        with self._lock:
            self.sock = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def passed(self) -> bool:
        """The deadline has passed (a socket timeout set to the time left counts too)."""
        return self.expired or self.remaining() <= 0.05

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _deadline_error(url: str, limits: LoadLimits) -> RetryableLoadError:
    return RetryableLoadError(
        f"fetching {url} did not finish within the total deadline of {limits.url_deadline_s:g} "
        "s (MMR_URL_DEADLINE, mmr worker --url-deadline): the server is too slow"
    )


def _too_big(url: str, size: int, limits: LoadLimits) -> PermanentLoadError:
    return PermanentLoadError(
        f"{url} is {size} bytes, over the limit of {limits.max_bytes} bytes "
        "(raise MMR_MAX_ITEM_BYTES to accept it)"
    )


def _read_body(
    resp: http.client.HTTPResponse, url: str, limits: LoadLimits, dog: _Watchdog
) -> bytes:
    length = resp.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > limits.max_bytes:
        raise _too_big(url, int(length), limits)
    chunks: list[bytes] = []
    total = 0
    while True:
        left = dog.remaining()
        if dog.passed():
            raise _deadline_error(url, limits)
        if dog.sock is not None:
            dog.sock.settimeout(min(limits.url_timeout_s, left))
        chunk = resp.read1(_CHUNK)  # at most one read on the socket: never waits for more
        if not chunk:
            break
        total += len(chunk)
        if total > limits.max_bytes:
            raise _too_big(url, total, limits)
        chunks.append(chunk)
    complete = length is None or not length.isdigit() or total == int(length)
    if dog.expired and not (complete and length is not None):
        raise _deadline_error(url, limits)  # the watchdog's shutdown ends a body like an EOF
    if not complete:
        raise RetryableLoadError(f"the answer of {url} ended after {total} of {length} bytes")
    return b"".join(chunks)


def _hop(
    url: str, parts: urllib.parse.SplitResult, limits: LoadLimits, dog: _Watchdog, what: str
) -> tuple[int, str | None, bytes]:
    """One request: (status, Location of a redirect, body of a 200)."""
    host = (parts.hostname or "").rstrip(".")
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    addresses = _resolve(host, port, limits, what)
    left = dog.remaining()
    if left <= 0:
        raise _deadline_error(url, limits)
    cls = _PinnedHTTPS if https else _PinnedHTTP
    conn = cls(host, port, addresses, timeout=min(limits.url_timeout_s, left), dog=dog)
    resp: http.client.HTTPResponse | None = None
    try:
        safe = "/%:@!$&'()*+,;=~-._?"  # already-quoted URLs pass unchanged
        target = urllib.parse.quote(
            urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")), safe=safe
        )
        conn.request("GET", target, headers={"User-Agent": "pg_mmretrieval", "Accept": "*/*"})
        resp = conn.getresponse()
        if resp.status in _REDIRECTS:
            return resp.status, resp.getheader("Location"), b""
        if resp.status != 200:
            return resp.status, None, (resp.reason or "").encode()
        return 200, None, _read_body(resp, url, limits, dog)
    finally:
        dog.unwatch()
        if resp is not None:
            resp.close()
        conn.close()


def fetch_url(url: str, limits: LoadLimits) -> bytes:
    """The body of ``url`` under the policy of the module doc.

    Raises:
        PermanentLoadError: a refused scheme, host or address (first URL or a redirect), too
            many redirects, HTTP 4xx, over ``max_bytes``, no content.
        RetryableLoadError: timeouts, the total deadline, connection errors, HTTP 5xx/408/429.
    """
    dog = _Watchdog(time.monotonic() + limits.url_deadline_s)
    current = url
    try:
        for hop in range(limits.url_max_redirects + 1):
            what = "URL" if hop == 0 else f"redirect {hop} of {url}"
            parts = _check_url(current, limits, what)
            try:
                status, location, body = _hop(current, parts, limits, dog, what)
            except (PermanentLoadError, RetryableLoadError):
                raise
            except http.client.InvalidURL as e:
                raise PermanentLoadError(f"{what}: {current!r} is not a valid URL: {e}") from None
            except (OSError, http.client.HTTPException) as e:
                if dog.passed():
                    raise _deadline_error(url, limits) from None
                raise RetryableLoadError(
                    f"fetching {current} failed: {e or type(e).__name__}"
                ) from None
            if status in _REDIRECTS:
                if not location:
                    raise PermanentLoadError(f"HTTP {status} from {current} without a Location")
                current = urllib.parse.urljoin(current, location)
                continue
            if status != 200:
                cls = RetryableLoadError if status in _RETRYABLE_HTTP else PermanentLoadError
                raise cls(f"HTTP {status} fetching {current}: {body.decode(errors='replace')}")
            if not body:
                raise PermanentLoadError(f"{current} returned no content")
            return body
    finally:
        dog.cancel()
    raise PermanentLoadError(
        f"{url} redirected more than {limits.url_max_redirects} times (MMR_URL_MAX_REDIRECTS)"
    )
