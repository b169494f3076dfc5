"""Subscription rules: which messages a subscription gets.

Filters: ``TrueFilter`` (the ``$Default`` rule), ``FalseFilter``, ``CorrelationFilter``
(system properties and user properties compared for equality) and ``SqlFilter`` with the
SQL-92 subset the service documents for everyday use: comparisons (= <> != < > <= >=),
AND / OR / NOT, parentheses, IS [NOT] NULL, [NOT] IN (...), [NOT] LIKE with % and _,
EXISTS(prop), string / number / TRUE / FALSE / NULL literals, ``sys.``/``user.`` prefixes
and [bracketed names]. A property that is missing compares as NULL (never true).
Rule actions are not emulated.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from .props import classify_custom

SYSTEM_PROPERTIES = {"label": "Label", "correlationid": "CorrelationId", "messageid": "MessageId",
                     "to": "To", "replyto": "ReplyTo", "sessionid": "SessionId",
                     "replytosessionid": "ReplyToSessionId", "contenttype": "ContentType",
                     "partitionkey": "PartitionKey"}


class RuleError(ValueError):
    pass


def user_value(raw: str) -> Any:
    """Typed value of a custom-property header text (see props.classify_custom)."""
    kind = classify_custom("p", raw)
    v = raw.strip()
    if kind in ("String", "DateTime"):
        return v[1:-1].replace('\\"', '"')
    if kind == "Boolean":
        return v == "true"
    if kind == "Int64":
        return int(v)
    return float(v)


class Context:
    """What a filter sees of one message."""

    def __init__(self, props: Optional[Dict[str, Any]], message_id: str, content_type: Optional[str],
                 custom: Optional[List[Tuple[str, str]]]):
        self.system: Dict[str, Any] = dict(props or {})
        self.system["MessageId"] = message_id
        if content_type is not None:
            self.system["ContentType"] = content_type
        self.user: Dict[str, Any] = {}
        for name, raw in custom or []:
            try:
                self.user[name.lower()] = user_value(raw)
            except ValueError:
                pass

    def get(self, scope: Optional[str], name: str) -> Any:
        if scope == "sys":
            key = SYSTEM_PROPERTIES.get(name.lower())
            return self.system.get(key) if key else None
        return self.user.get(name.lower())


# ----- SQL filter -----------------------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:
    (?P<num>\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?)
  | (?P<str>'(?:[^']|'')*')
  | (?P<op><>|!=|<=|>=|=|<|>|\(|\)|,)
  | (?P<name>\[[^\]]+\]|[A-Za-z_][A-Za-z0-9_]*(?:\.(?:\[[^\]]+\]|[A-Za-z_][A-Za-z0-9_]*))?)
)""", re.X)

KEYWORDS = {"and", "or", "not", "is", "null", "in", "like", "true", "false", "exists", "escape"}


def _tokenize(text: str) -> List[Tuple[str, Any]]:
    out: List[Tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise RuleError("The SQL filter is invalid near '%s'." % text[pos:pos + 20])
        pos = m.end()
        if m.group("num") is not None:
            s = m.group("num")
            out.append(("lit", float(s) if any(c in s for c in ".eE") else int(s)))
        elif m.group("str") is not None:
            out.append(("lit", m.group("str")[1:-1].replace("''", "'")))
        elif m.group("op") is not None:
            out.append(("op", m.group("op")))
        else:
            name = m.group("name")
            if name.lower() in KEYWORDS:
                out.append(("kw", name.lower()))
            else:
                scope, _, prop = name.rpartition(".") if "." in name and not name.startswith("[") else ("", "", name)
                scope = scope.lower() or None
                if scope not in (None, "sys", "user"):
                    raise RuleError("Unknown property scope '%s' in the SQL filter." % scope)
                out.append(("prop", (scope, prop.strip("[]"))))
    return out


class _Parser:
    def __init__(self, tokens):
        self.t = tokens
        self.i = 0

    def peek(self, kind=None, value=None):
        if self.i >= len(self.t):
            return False
        k, v = self.t[self.i]
        return (kind is None or k == kind) and (value is None or v == value)

    def take(self, kind=None, value=None):
        if not self.peek(kind, value):
            got = self.t[self.i][1] if self.i < len(self.t) else "end of expression"
            raise RuleError("The SQL filter is invalid: expected %s, got '%s'." % (value or kind, got))
        tok = self.t[self.i]
        self.i += 1
        return tok

    def parse(self):
        node = self.expr()
        if self.i != len(self.t):
            raise RuleError("The SQL filter is invalid near '%s'." % (self.t[self.i][1],))
        return node

    def expr(self):
        node = self.term()
        while self.peek("kw", "or"):
            self.take()
            node = ("or", node, self.term())
        return node

    def term(self):
        node = self.factor()
        while self.peek("kw", "and"):
            self.take()
            node = ("and", node, self.factor())
        return node

    def factor(self):
        if self.peek("kw", "not"):
            self.take()
            return ("not", self.factor())
        if self.peek("op", "("):
            self.take()
            node = self.expr()
            self.take("op", ")")
            return node
        if self.peek("kw", "exists"):
            self.take()
            self.take("op", "(")
            _, prop = self.take("prop")
            self.take("op", ")")
            return ("exists", prop)
        left = self.operand()
        if self.peek("op") and self.t[self.i][1] in ("=", "<>", "!=", "<", ">", "<=", ">="):
            _, op = self.take()
            return ("cmp", op, left, self.operand())
        negate = False
        if self.peek("kw", "is"):
            self.take()
            if self.peek("kw", "not"):
                self.take()
                negate = True
            self.take("kw", "null")
            node = ("isnull", left)
            return ("not", node) if negate else node
        if self.peek("kw", "not"):
            self.take()
            negate = True
        if self.peek("kw", "in"):
            self.take()
            self.take("op", "(")
            items = [self.operand()]
            while self.peek("op", ","):
                self.take()
                items.append(self.operand())
            self.take("op", ")")
            node = ("in", left, items)
            return ("not", node) if negate else node
        if self.peek("kw", "like"):
            self.take()
            pattern = self.operand()
            node = ("like", left, pattern)
            return ("not", node) if negate else node
        if left[0] == "lit" and isinstance(left[1], bool):
            return ("truth", left)
        raise RuleError("The SQL filter is invalid: a condition is incomplete.")

    def operand(self):
        if self.peek("lit") or self.peek("prop"):
            return self.take()
        if self.peek("kw", "true") or self.peek("kw", "false"):
            return ("lit", self.take()[1] == "true")
        if self.peek("kw", "null"):
            self.take()
            return ("lit", None)
        if self.peek("op", "-"):
            self.take()
        raise RuleError("The SQL filter is invalid: expected a value or a property name.")


def _val(node, ctx: Context):
    if node[0] == "lit":
        return node[1]
    scope, name = node[1]
    return ctx.get(scope, name)


def _comparable(a, b):
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return (isinstance(a, num) and isinstance(b, num)) or (isinstance(a, str) and isinstance(b, str))


def _eval(node, ctx: Context) -> bool:
    kind = node[0]
    if kind == "or":
        return _eval(node[1], ctx) or _eval(node[2], ctx)
    if kind == "and":
        return _eval(node[1], ctx) and _eval(node[2], ctx)
    if kind == "not":
        return not _eval(node[1], ctx)
    if kind == "truth":
        return bool(node[1][1])
    if kind == "exists":
        scope, name = node[1]
        return ctx.get(scope, name) is not None
    if kind == "isnull":
        return _val(node[1], ctx) is None
    if kind == "cmp":
        a, b = _val(node[2], ctx), _val(node[3], ctx)
        if a is None or b is None or not _comparable(a, b):
            return False
        op = node[1]
        if op == "=":
            return a == b
        if op in ("<>", "!="):
            return a != b
        if isinstance(a, bool):
            return False
        return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
    if kind == "in":
        a = _val(node[1], ctx)
        return a is not None and any(_comparable(a, _val(i, ctx)) and a == _val(i, ctx) for i in node[2])
    if kind == "like":
        a, p = _val(node[1], ctx), _val(node[2], ctx)
        if not isinstance(a, str) or not isinstance(p, str):
            return False
        rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in p)
        return re.fullmatch(rx, a, re.S) is not None
    raise RuleError("bad filter node")


class Filter:
    kind = "TrueFilter"

    def matches(self, ctx: Context) -> bool:
        return True

    def to_json(self) -> Dict[str, Any]:
        return {"true": True}


class FalseFilter(Filter):
    kind = "FalseFilter"

    def matches(self, ctx: Context) -> bool:
        return False

    def to_json(self) -> Dict[str, Any]:
        return {"false": True}


class SqlFilter(Filter):
    kind = "SqlFilter"

    def __init__(self, expression: str):
        if not isinstance(expression, str) or not expression.strip():
            raise RuleError("The SQL filter expression is empty.")
        if len(expression) > 1024:
            raise RuleError("The SQL filter expression is longer than 1024 characters.")
        self.expression = expression
        self.tree = _Parser(_tokenize(expression)).parse()

    def matches(self, ctx: Context) -> bool:
        return _eval(self.tree, ctx)

    def to_json(self) -> Dict[str, Any]:
        return {"sql": self.expression}


CORRELATION_FIELDS = ("CorrelationId", "MessageId", "To", "ReplyTo", "Label", "SessionId",
                      "ReplyToSessionId", "ContentType")


class CorrelationFilter(Filter):
    kind = "CorrelationFilter"

    def __init__(self, fields: Dict[str, Any], properties: Optional[Dict[str, Any]] = None):
        if not isinstance(fields, dict):
            raise RuleError("A correlation filter is an object of fields.")
        self.fields = {k: v for k, v in fields.items() if k in CORRELATION_FIELDS and v is not None}
        props = properties if properties is not None else fields.get("Properties", {})
        if not isinstance(props, dict):
            raise RuleError("Correlation filter 'Properties' must be an object.")
        self.properties = {str(k).lower(): v for k, v in props.items()}
        if not self.fields and not self.properties:
            raise RuleError("A correlation filter needs at least one field or property.")

    def matches(self, ctx: Context) -> bool:
        for k, v in self.fields.items():
            if ctx.system.get(k) != v:
                return False
        for k, v in self.properties.items():
            if ctx.user.get(k) != v:
                return False
        return True

    def to_json(self) -> Dict[str, Any]:
        d: Dict[str, Any] = dict(self.fields)
        if self.properties:
            d["Properties"] = dict(self.properties)
        return {"correlation": d}


def filter_from_json(d: Any) -> Filter:
    """{"sql": "..."} | {"correlation": {...}} | {"true": true} | {"false": true}"""
    if not isinstance(d, dict) or len(d) != 1:
        raise RuleError("A rule is one of {\"sql\": ...}, {\"correlation\": {...}}, {\"true\": true}, {\"false\": true}.")
    (k, v), = d.items()
    if k == "sql":
        return SqlFilter(v)
    if k == "correlation":
        return CorrelationFilter(v)
    if k == "true":
        return Filter()
    if k == "false":
        return FalseFilter()
    raise RuleError("Unknown filter kind '%s'." % k)


def default_rules() -> Dict[str, Filter]:
    return {"$Default": Filter()}
