"""Subscription rules: which messages a subscription gets.

Filters: ``TrueFilter`` (the ``$Default`` rule), ``FalseFilter``, ``CorrelationFilter``
(system properties and user properties compared for equality) and ``SqlFilter`` with the
SQL-92 subset the service documents for everyday use: comparisons (= <> != < > <= >=),
AND / OR / NOT, parentheses, IS [NOT] NULL, [NOT] IN (...), [NOT] LIKE with % and _,
EXISTS(prop), string / number / TRUE / FALSE / NULL literals, ``sys.``/``user.`` prefixes
and [bracketed names]. A property that is missing compares as NULL (never true).
``@name`` parameters are taken from the rule's Parameters. A rule may carry a
:class:`SqlAction` (``SET prop = value`` / ``REMOVE prop``, separated by ``;``) applied to the copy
of a message the subscription receives through that rule.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from .props import classify_custom

SYSTEM_PROPERTIES = {
    "label": "Label",
    "correlationid": "CorrelationId",
    "messageid": "MessageId",
    "to": "To",
    "replyto": "ReplyTo",
    "sessionid": "SessionId",
    "replytosessionid": "ReplyToSessionId",
    "contenttype": "ContentType",
    "partitionkey": "PartitionKey",
}


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

    def __init__(
        self,
        props: Optional[Dict[str, Any]],
        message_id: str,
        content_type: Optional[str],
        custom: Optional[List[Tuple[str, str]]],
    ):
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

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<num>\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?)
  | (?P<str>'(?:[^']|'')*')
  | (?P<op><>|!=|<=|>=|=|<|>|\(|\)|,|;)
  | (?P<param>@[A-Za-z_][A-Za-z0-9_]*)
  | (?P<name>\[[^\]]+\]|[A-Za-z_][A-Za-z0-9_]*(?:\.(?:\[[^\]]+\]|[A-Za-z_][A-Za-z0-9_]*))?)
)""",
    re.X,
)

KEYWORDS = {"and", "or", "not", "is", "null", "in", "like", "true", "false", "exists", "escape"}


def _tokenize(text: str, params: Optional[Dict[str, Any]] = None) -> List[Tuple[str, Any]]:
    out: List[Tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise RuleError("The SQL filter is invalid near '%s'." % text[pos : pos + 20])
        pos = m.end()
        if m.group("num") is not None:
            s = m.group("num")
            out.append(("lit", float(s) if any(c in s for c in ".eE") else int(s)))
        elif m.group("str") is not None:
            out.append(("lit", m.group("str")[1:-1].replace("''", "'")))
        elif m.group("op") is not None:
            out.append(("op", m.group("op")))
        elif m.group("param") is not None:
            name = m.group("param")
            if not params or name not in params and name[1:] not in params:
                raise RuleError("The SQL expression uses the parameter '%s', which is not given." % name[:50])
            out.append(("lit", params[name] if name in params else params[name[1:]]))
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
            return bool(a == b)
        if op in ("<>", "!="):
            return bool(a != b)
        if isinstance(a, bool):
            return False
        return bool({"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op])
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
    """A rule: its filter (this class: TrueFilter) plus the rule's action and creation time."""

    kind = "TrueFilter"
    action: Optional["SqlAction"] = None
    created = 0.0

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

    def __init__(self, expression: str, parameters: Optional[Dict[str, Any]] = None):
        if not isinstance(expression, str) or not expression.strip():
            raise RuleError("The SQL filter expression is empty.")
        if len(expression) > 1024:
            raise RuleError("The SQL filter expression is longer than 1024 characters.")
        self.expression = expression
        self.parameters = dict(parameters or {})
        self.tree = _Parser(_tokenize(expression, self.parameters)).parse()

    def matches(self, ctx: Context) -> bool:
        return _eval(self.tree, ctx)

    def to_json(self) -> Dict[str, Any]:
        if self.parameters:
            return {"sql": self.expression, "parameters": dict(self.parameters)}
        return {"sql": self.expression}


CORRELATION_FIELDS = (
    "CorrelationId",
    "MessageId",
    "To",
    "ReplyTo",
    "Label",
    "SessionId",
    "ReplyToSessionId",
    "ContentType",
)


class CorrelationFilter(Filter):
    kind = "CorrelationFilter"

    def __init__(self, fields: Dict[str, Any], properties: Optional[Dict[str, Any]] = None):
        if not isinstance(fields, dict):
            raise RuleError("A correlation filter is an object of fields.")
        self.fields = {k: v for k, v in fields.items() if k in CORRELATION_FIELDS and v is not None}
        props = properties if properties is not None else fields.get("Properties", {})
        if not isinstance(props, dict):
            raise RuleError("Correlation filter 'Properties' must be an object.")
        self.original_properties = {str(k): v for k, v in props.items()}
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
            d["Properties"] = dict(self.original_properties)
        return {"correlation": d}


def filter_from_json(d: Any) -> Filter:
    """{"sql": "...", "parameters": {...}} | {"correlation": {...}} | {"true": true} | {"false": true},
    each with an optional "action": "SET ...; REMOVE ..." (and "action_parameters", "created_at")."""
    if isinstance(d, dict):
        d = dict(d)
        action = d.pop("action", None)
        action_params = d.pop("action_parameters", None)
        created = d.pop("created_at", None)
        params = d.pop("parameters", None) if "sql" in d else None
    if not isinstance(d, dict) or len(d) != 1:
        raise RuleError('A rule is one of {"sql": ...}, {"correlation": {...}}, {"true": true}, {"false": true}.')
    ((k, v),) = d.items()
    f: Filter
    if k == "sql":
        if params is not None and not isinstance(params, dict):
            raise RuleError("'parameters' must be an object.")
        f = SqlFilter(v, params)
    elif k == "correlation":
        f = CorrelationFilter(v)
    elif k == "true":
        f = Filter()
    elif k == "false":
        f = FalseFilter()
    else:
        raise RuleError("Unknown filter kind '%s'." % k)
    if action is not None:
        if action_params is not None and not isinstance(action_params, dict):
            raise RuleError("'action_parameters' must be an object.")
        f.action = SqlAction(action, action_params)
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        f.created = float(created)
    return f


def rule_to_json(f: Filter) -> Dict[str, Any]:
    """filter_from_json's input for a rule: the filter, its action and creation time."""
    d = f.to_json()
    if f.action is not None:
        d["action"] = f.action.expression
        if f.action.parameters:
            d["action_parameters"] = dict(f.action.parameters)
    if f.created:
        d["created_at"] = f.created
    return d


def header_text(v: Any) -> str:
    """A typed value as the custom-property header text a receiver gets (props.classify_custom)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    return '"' + str(v).replace('"', '\\"') + '"'


_SETTABLE = {k: v for k, v in SYSTEM_PROPERTIES.items() if k not in ("messageid", "contenttype", "partitionkey")}


class SqlAction:
    """``SET prop = value`` / ``REMOVE prop`` statements, separated by ``;``; a value is a literal,
    a property or an ``@parameter``."""

    def __init__(self, expression: str, parameters: Optional[Dict[str, Any]] = None):
        if not isinstance(expression, str) or not expression.strip():
            raise RuleError("The SQL rule action is empty.")
        if len(expression) > 1024:
            raise RuleError("The SQL rule action is longer than 1024 characters.")
        self.expression = expression
        self.parameters = dict(parameters or {})
        toks = _tokenize(expression, self.parameters)
        self.steps: List[Tuple[str, Tuple[Optional[str], str], Any]] = []
        i = 0
        while i < len(toks):
            if toks[i] == ("op", ";"):
                i += 1
                continue
            kind, word = toks[i]
            verb = str(word[1]).lower() if kind == "prop" and word[0] is None else None
            if verb not in ("set", "remove") or i + 1 >= len(toks) or toks[i + 1][0] != "prop":
                raise RuleError("The SQL rule action is invalid: expected SET or REMOVE and a property.")
            prop = toks[i + 1][1]
            if prop[0] == "sys" and prop[1].lower() not in _SETTABLE:
                raise RuleError("The SQL rule action cannot change sys.%s." % prop[1][:50])
            if verb == "remove":
                self.steps.append(("remove", prop, None))
                i += 2
            else:
                if i + 3 >= len(toks) or toks[i + 2] != ("op", "=") or toks[i + 3][0] not in ("lit", "prop", "kw"):
                    raise RuleError("The SQL rule action is invalid: SET needs '= value'.")
                val = toks[i + 3]
                if val[0] == "kw":
                    if val[1] not in ("true", "false", "null"):
                        raise RuleError("The SQL rule action is invalid near '%s'." % val[1])
                    val = ("lit", None if val[1] == "null" else val[1] == "true")
                self.steps.append(("set", prop, val))
                i += 4
            if i < len(toks) and toks[i] != ("op", ";"):
                raise RuleError("The SQL rule action is invalid near '%s'." % (toks[i][1],))

    def apply(
        self,
        props: Optional[Dict[str, Any]],
        custom: Optional[List[Tuple[str, str]]],
        message_id: str,
        content_type: Optional[str],
    ):
        """New (props, custom) for a copy of the message, the statements applied in order."""
        ctx = Context(props, message_id, content_type, custom)
        p = dict(props or {})
        c = list(custom or [])
        for verb, (scope, name), val in self.steps:
            value = None if verb == "remove" else _val(val, ctx)
            if scope == "sys":
                key = _SETTABLE[name.lower()]
                if value is None:
                    p.pop(key, None)
                    ctx.system.pop(key, None)
                else:
                    p[key] = ctx.system[key] = value if isinstance(value, str) else header_text(value).strip('"')
            else:
                c = [(n, v) for n, v in c if n.lower() != name.lower()]
                ctx.user.pop(name.lower(), None)
                if value is not None:
                    c.append((name, header_text(value)))
                    ctx.user[name.lower()] = value
        return p or None, c or None


def default_rules() -> Dict[str, Filter]:
    return {"$Default": Filter()}
