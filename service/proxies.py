"""Who the client is when requests arrive through proxies (README: "Behind a proxy").

The socket's peer is the client unless it is one of `TRUSTED_PROXIES`. A trusted peer says, in the
header it is configured to write (`PROXY_HEADERS`), whom it forwarded for: `X-Forwarded-For` with
`-Proto` and `-Host`, or RFC 7239's `Forwarded`. Each proxy appends the address it received the
request from, so the list is read from the right: the client is the rightmost address that is not
itself a trusted proxy, and the scheme and host are those that the proxy which received the
client's request wrote. From an untrusted peer these headers are ignored, whatever they say: a
client could write them itself. Only one kind is read, because a proxy passes on, unchanged, the
kind it does not write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Literal

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from service.keys import SETTINGS

Network = IPv4Network | IPv6Network
ProxyHeaders = Literal["x-forwarded", "forwarded"]
_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


@dataclass(frozen=True, slots=True)
class Client:
    """The client as the request's first hop saw it: its address, and the scheme and host it used."""

    address: str
    scheme: str
    host: str

    @property
    def origin(self) -> str:
        """The origin (scheme://host[:port]) the client sent the request to, as a browser writes it."""
        host = self.host.lower().removesuffix(_DEFAULT_PORTS.get(self.scheme, "\0"))
        return f"{self.scheme}://{host}"


@dataclass(frozen=True, slots=True)
class _Hop:
    """One proxy's entry: the address it received the request from, and what it says of the
    request's scheme and host (None: it says nothing)."""

    address: str
    scheme: str | None
    host: str | None


_CLIENT = web.RequestKey("client", Client)


def client(request: web.BaseRequest) -> Client:
    """The client of a request that passed `client_middleware`; the socket's peer otherwise (a
    request that the HTTP parser refused never reaches it)."""
    found: Client | None = request.get(_CLIENT)
    if found is not None:
        return found
    return Client(request.remote or "unknown", request.scheme, request.host)


def parse_address(text: str) -> IPv4Address | IPv6Address | None:
    """An address as proxies write it: `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1` or
    `[2001:db8::1]:443`; None for anything else (`unknown`, an obfuscated `_name`). An IPv4
    address mapped into IPv6 (a dual-stack socket's peer) is the IPv4 address."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    mapped = address.ipv4_mapped if isinstance(address, IPv6Address) else None
    return mapped or address


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    if not trusted:
        return False
    parsed = parse_address(address)
    return parsed is not None and any(parsed in network for network in trusted)


def _plain(address: str) -> str:
    """An address without port or brackets, so that a client counts as one whatever port it
    came from; anything else as it was written."""
    parsed = parse_address(address)
    return str(parsed) if parsed is not None else address.strip()


def _list(request: web.BaseRequest, header: str) -> list[str]:
    """A list header's values, the fields of several header lines joined in order (RFC 9110 5.3)."""
    return [value.strip() for line in request.headers.getall(header, ()) for value in line.split(",")]


def _x_forwarded_hops(request: web.BaseRequest) -> list[_Hop]:
    """The hops of X-Forwarded-For, each with the -Proto and -Host value written beside it. A
    proxy that sets -Proto or -Host rather than appending to them leaves one value: then it
    stands for every hop."""
    addresses = [address for address in _list(request, hdrs.X_FORWARDED_FOR) if address]
    schemes, hosts = _list(request, hdrs.X_FORWARDED_PROTO), _list(request, hdrs.X_FORWARDED_HOST)

    def beside(values: list[str], from_right: int) -> str | None:
        return values[max(len(values) - from_right, 0)] if values else None

    count = len(addresses)
    return [_Hop(address, beside(schemes, count - i), beside(hosts, count - i)) for i, address in enumerate(addresses)]


def _forwarded_hops(request: web.BaseRequest) -> list[_Hop]:
    return [
        _Hop(element.get("for", "unknown"), element.get("proto"), element.get("host")) for element in request.forwarded
    ]


def find_client(request: web.BaseRequest, trusted: Sequence[Network], headers: ProxyHeaders) -> Client:
    """The client of `request` (see the module's text)."""
    peer, scheme, host = request.remote or "unknown", request.scheme, request.host
    if not is_trusted(peer, trusted):
        return Client(peer, scheme, host)
    hops = _x_forwarded_hops(request) if headers == "x-forwarded" else _forwarded_hops(request)
    if not hops:  # the proxy itself, or one that forwards without saying for whom
        return Client(peer, scheme, host)
    first = hops[0]
    for hop in reversed(hops):
        first = hop
        if not is_trusted(hop.address, trusted):
            break
    said_scheme = (first.scheme or "").lower()
    return Client(
        _plain(first.address),
        said_scheme if said_scheme in _SCHEMES else scheme,
        first.host.strip() if first.host and first.host.strip() else host,
    )


@web.middleware
async def client_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Find the client once, before anything reads it (the origin check, the rate limit, the
    access log)."""
    settings = request.app[SETTINGS]
    request[_CLIENT] = find_client(request, settings.trusted_proxies, settings.proxy_headers)
    return await handler(request)
