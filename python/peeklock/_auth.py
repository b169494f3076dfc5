"""Connection strings, SAS tokens and the Authorization header for management
requests: what both the data-plane client and the management client need, so
neither imports the other."""

from __future__ import annotations

import datetime as _dt
import math
import time
from typing import Callable, Optional, Tuple, Union

from . import _core
from .errors import from_code
from ._validate import _check_seconds, _check_str, _unix, _unix_time

# A management request's SAS token is signed anew for each request, so it needs to live only
# as long as the request: a header leaked from a debug log or a proxy is good for minutes, not
# the hour of the tokens the core keeps and reuses (PL_DEFAULT_TOKEN_LIFETIME_S).
_MANAGEMENT_TOKEN_LIFETIME_S = 300


class ConnectionString:
    """A parsed connection string. ``repr`` never shows the key or token."""

    __slots__ = ("endpoint", "key_name", "key", "sas_token", "entity_path", "development_emulator")

    def __init__(
        self,
        endpoint: str,
        key_name: Optional[str],
        key: Optional[str],
        sas_token: Optional[str],
        entity_path: Optional[str],
        development_emulator: bool,
    ) -> None:
        self.endpoint = endpoint
        self.key_name = key_name
        self.key = key
        self.sas_token = sas_token
        self.entity_path = entity_path
        self.development_emulator = development_emulator

    def __repr__(self) -> str:
        return (
            f"ConnectionString(endpoint={self.endpoint!r}, key_name={self.key_name!r}, "
            f"key={'<hidden>' if self.key else None}, "
            f"sas_token={'<hidden>' if self.sas_token else None}, "
            f"entity_path={self.entity_path!r}, "
            f"development_emulator={self.development_emulator})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConnectionString):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)


def parse_connection_string(s: str) -> ConnectionString:
    """Parses a Service Bus connection string (SAS key, SAS token, legacy
    issuer/secret forms; ``UseDevelopmentEmulator=true``)."""
    _check_str("connection_string", s, empty=True)
    cs = _core.pl_connstr_parse(s)
    return ConnectionString(
        endpoint=_core.pl_connstr_endpoint(cs),
        key_name=_core.pl_connstr_key_name(cs),
        key=_core.pl_connstr_key(cs),
        sas_token=_core.pl_connstr_sas_token(cs),
        entity_path=_core.pl_connstr_entity_path(cs),
        development_emulator=bool(_core.pl_connstr_development_emulator(cs)),
    )


def sas_token(
    uri: str,
    key_name: str,
    key: str,
    expiry: Union[int, float, _dt.datetime, None] = None,
    *,
    lifetime: Optional[float] = None,
) -> str:
    """A Service Bus SAS token for ``uri`` (namespace or entity). Give either
    ``lifetime`` (seconds from now) or ``expiry`` (the absolute end: Unix
    seconds or a datetime); neither means the core's token lifetime
    (PL_DEFAULT_TOKEN_LIFETIME_S: one hour) from now. The key is used
    as text, never base64-decoded."""
    _check_str("uri", uri, empty=True)
    _check_str("key_name", key_name, empty=True)
    _check_str("key", key, empty=True)
    if lifetime is not None:
        if expiry is not None:
            raise TypeError("pass lifetime or expiry, not both")
        return str(_core.pl_sas_token(uri, key_name, key, lifetime_expiry(lifetime, "lifetime")))
    # an expiry in 1970-2001 (a lifetime passed by mistake) is the core's to refuse
    if expiry is None:
        se = int(time.time()) + _core.PL_DEFAULT_TOKEN_LIFETIME_S
    elif _core.pl_check_expiry("expiry", _unix_time(expiry, "expiry")) < 0:  # an int64_t's range
        raise from_code(*_core.pl_py_error_last())
    else:
        se = _unix(expiry, "expiry")
    return str(_core.pl_sas_token(uri, key_name, key, se))


def lifetime_expiry(lifetime: float, name: str) -> int:
    """The Unix expiry of a token that lives ``lifetime`` seconds from now: a positive,
    finite number of seconds whose end is a 64-bit Unix time (the core's), else
    ValueError naming the value ``name`` (``sas_token``'s rule for ``lifetime``)."""
    huge = isinstance(lifetime, int) and not isinstance(lifetime, bool) and _unix_time(lifetime, name) == math.inf
    life = None if huge else _check_seconds(lifetime, name)  # (an int past any float: too long)
    end = time.time() + life if life is not None else math.inf
    if _core.pl_check_expiry(name, end) < 0:  # the core's int64_t range
        raise ValueError(f"{name} is too long: the token's expiry must be a 64-bit Unix time, got {lifetime!r}")
    return int(end)


TokenProvider = Callable[[str], Union[str, Tuple[str, float]]]


def management_authorization(
    connection_string: Optional[str],
    key_name: Optional[str],
    key: Optional[str],
    token: Optional[str],
    token_provider: Optional[TokenProvider],
) -> Callable[[str], str]:
    """The Authorization header for management requests, from the same
    credentials the C client was given (kept in this closure, never shown)."""
    if connection_string is not None:
        cs = parse_connection_string(connection_string)
        key_name, key, token = cs.key_name or key_name, cs.key or key, cs.sas_token or token
    if token_provider is not None:
        provider = token_provider

        def bearer(audience: str) -> str:
            got = provider(audience)
            return "Bearer " + str(got[0] if isinstance(got, tuple) else got)

        return bearer
    if key is not None and key_name is not None:
        kn, k = key_name, key
        return lambda audience: sas_token(audience, kn, k, lifetime=_MANAGEMENT_TOKEN_LIFETIME_S)
    fixed = token or ""
    return lambda audience: fixed
