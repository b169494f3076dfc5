"""SAS token checking, per protocol.md section 4 ("Emulator validation rule").

- parse ``k=v`` pairs of ``SharedAccessSignature ...`` in any order;
- HMAC-SHA256 over the raw ``sr`` text as received + "\\n" + ``se``, key = UTF-8 bytes of the
  key string (never base64-decoded); compare with the URL-decoded ``sig``;
- ``se`` must be in the future (real wall-clock time: moving the emulator clock does not
  invalidate client tokens) and ``skn`` a configured key name;
- scope: URL-decoded, lower-cased ``sr`` without scheme and default port must be a prefix
  (on a path boundary) of the lower-cased request host + path + query.

Failures never echo the signature or the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
import urllib.parse
from typing import Dict, Optional, Tuple


log = logging.getLogger("peeklock.emulator.sas")


def loggable_path(path_qs: str) -> str:
    """A request path fit for a log line: no query string, and the lock token of a settle
    URL (``…/messages/{seq}/{lock-token}``) replaced, since a lock token is a secret."""
    path = path_qs.partition("?")[0][:300]
    segs = path.split("/")
    lower = [x.lower() for x in segs]
    if "messages" in lower:
        i = len(lower) - 1 - lower[::-1].index("messages")
        if len(segs) > i + 2:
            segs[i + 2 :] = ["<lock-token>"]
    return "/".join(segs)


class AuthError(Exception):
    pass


def sign(sr: str, se: int, key: str) -> str:
    """base64 HMAC-SHA256 of ``sr + "\\n" + se`` with the key's UTF-8 bytes."""
    mac = hmac.new(key.encode("utf-8"), ("%s\n%s" % (sr, se)).encode("utf-8"), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def make_token(uri: str, key_name: str, key: str, expiry: int) -> str:
    """A token the way the documentation builds one (used by tests and the CLI)."""
    sr = urllib.parse.quote(uri, safe="")
    sig = urllib.parse.quote(sign(sr, expiry, key), safe="")
    return "SharedAccessSignature sr=%s&sig=%s&se=%d&skn=%s" % (sr, sig, expiry, key_name)


def _scope(sr_raw: str) -> str:
    s = urllib.parse.unquote(sr_raw)
    if "%" in s:
        # The URI signed was the request's own, percent-encoded URL (an entity name with a
        # space or a non-ASCII letter): compare it decoded, as the request's path is.
        s = urllib.parse.unquote(s)
    s = s.lower().strip()
    for scheme in ("https://", "http://", "sb://"):
        if s.startswith(scheme):
            s = s[len(scheme) :]
            break
    host, sep, rest = s.partition("/")
    for port in (":443", ":80"):
        if host.endswith(port):
            host = host[: -len(port)]
    return host + sep + rest


def _target(host: str, path_qs: str) -> str:
    h = host.lower()
    if h.endswith((":443", ":80")):  # rare: most hosts carry another port or none
        for port in (":443", ":80"):
            if h.endswith(port):
                h = h[: -len(port)]
    return h + path_qs.lower()


class SasValidator:
    def __init__(self, keys: Dict[str, str]):
        self.keys = dict(keys)
        # header text -> (se, scope without a trailing "/"); only tokens whose signature verified
        self._cache: Dict[str, Tuple[int, str]] = {}

    def _verify(self, header: str) -> Tuple[int, str]:
        cached = self._cache.get(header)
        if cached is not None:
            return cached
        h = header.strip()
        if not h.startswith("SharedAccessSignature "):
            if h.lower().startswith(("wrap ", "bearer ")):
                raise AuthError("InvalidSignature: only SharedAccessSignature tokens are accepted by the emulator.")
            raise AuthError("MalformedToken: the Authorization header is not a SharedAccessSignature token.")
        fields: Dict[str, str] = {}
        for part in h[len("SharedAccessSignature ") :].strip().split("&"):
            k, sep, v = part.partition("=")
            if not sep:
                raise AuthError("MalformedToken: the token has a field without a value.")
            fields[k.strip()] = v.strip()
        for required in ("sr", "sig", "se", "skn"):
            if not fields.get(required):
                raise AuthError("MalformedToken: the token has no '%s' field." % required)
        try:
            se = int(fields["se"])
        except ValueError:
            raise AuthError("MalformedToken: 'se' is not a number of seconds.") from None
        key = self.keys.get(fields["skn"])
        if key is None:
            raise AuthError("InvalidSignature: unknown SharedAccessKeyName (skn).")
        expected = sign(fields["sr"], se, key)
        given = urllib.parse.unquote(fields["sig"])
        if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
            raise AuthError("SubCode=40103. Invalid authorization token signature")
        result = (se, _scope(fields["sr"]).rstrip("/"))
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[header] = result
        return result

    def check(self, header: Optional[str], host: str, path_qs: str, now: Optional[float] = None) -> None:
        """Raise AuthError (→ 401) unless `header` authorizes a request to host+path_qs."""
        if not header:
            raise AuthError("MissingToken: The request has no Authorization header.")
        se, scope = self._verify(header)
        if se <= (now if now is not None else time.time()):
            raise AuthError("ExpiredToken: The token is expired.")
        target = _target(host, path_qs)
        if not (
            target == scope
            or target.startswith(scope + "/")
            or target.startswith(scope + "?")
            or scope == target.rstrip("/")
        ):
            log.debug("token scope %r does not cover %r", loggable_path(scope), loggable_path(target))
            raise AuthError("InvalidAudience: The token's resource (sr) does not cover this request.")
