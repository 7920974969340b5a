"""A small OData ``$filter`` compiler and ``$select`` helper.

Supported: ``eq ne gt ge lt le``, ``and or not``, parentheses, string literals ('...' with '' escapes),
numbers, true/false/null, ``datetime'...'`` literals, property paths with ``/`` (``executionInfo/result``),
and the functions ``startswith(path,'x')``, ``endswith(path,'x')``, ``substringof('x',path)``.
String comparisons are case-insensitive (states and ids are case-insensitive in the service).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import bad_query
from .redact import is_write_only_path
from .util import parse_iso

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<dt>datetime'[^']*')|(?P<num>-?\d+(?:\.\d+)?)"
                    r"|(?P<lp>\()|(?P<rp>\))|(?P<comma>,)|(?P<name>[A-Za-z_$][A-Za-z0-9_/.$-]*))")
_OPS = {"eq", "ne", "gt", "ge", "lt", "le"}


class _DT:
    __slots__ = ("ts",)

    def __init__(self, ts):
        self.ts = ts


def _tokenize(text):
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"unexpected character at {pos}")
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None  # every alternative of _TOKEN is a named group
        val = m.group(kind)
        if kind == "str":
            out.append(("lit", val[1:-1].replace("''", "'")))
        elif kind == "dt":
            ts = parse_iso(val[9:-1])
            if ts is None:
                raise ValueError("bad datetime literal")
            out.append(("lit", _DT(ts)))
        elif kind == "num":
            out.append(("lit", float(val) if "." in val else int(val)))
        elif kind == "name":
            low = val.lower()
            if low in ("true", "false"):
                out.append(("lit", low == "true"))
            elif low == "null":
                out.append(("lit", None))
            elif low in _OPS or low in ("and", "or", "not"):
                out.append(("kw", low))
            else:
                out.append(("name", val))
        else:
            out.append((kind, val))
    return out


def _norm(a, b):
    if isinstance(b, _DT):
        a = parse_iso(a) if isinstance(a, str) else a
        return a, b.ts
    if isinstance(a, _DT):
        b = parse_iso(b) if isinstance(b, str) else b
        return a.ts, b
    if isinstance(a, str) and isinstance(b, str):
        return a.lower(), b.lower()
    return a, b


def _cmp(op, a, b):
    a, b = _norm(a, b)
    if op == "eq":
        return a == b
    if op == "ne":
        return a != b
    if a is None or b is None:
        return False
    try:
        return {"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op]
    except TypeError:
        return False


class _Parser:
    def __init__(self, tokens):
        self.t = tokens
        self.i = 0

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else (None, None)

    def take(self, kind=None, val=None):
        tok = self.peek()
        if tok[0] is None or (kind and tok[0] != kind) or (val and tok[1] != val):
            raise ValueError(f"expected {val or kind}")
        self.i += 1
        return tok

    def parse(self):
        e = self.or_expr()
        if self.i != len(self.t):
            raise ValueError("trailing tokens")
        return e

    def or_expr(self):
        left = self.and_expr()
        while self.peek() == ("kw", "or"):
            self.take()
            right = self.and_expr()
            left = (lambda lhs, rhs: lambda g: lhs(g) or rhs(g))(left, right)
        return left

    def and_expr(self):
        left = self.unary()
        while self.peek() == ("kw", "and"):
            self.take()
            right = self.unary()
            left = (lambda lhs, rhs: lambda g: lhs(g) and rhs(g))(left, right)
        return left

    def unary(self):
        if self.peek() == ("kw", "not"):
            self.take()
            inner = self.unary()
            return lambda g: not inner(g)
        if self.peek()[0] == "lp":
            save = self.i
            self.take()
            e = self.or_expr()
            self.take("rp")
            if self.peek()[0] == "kw" and self.peek()[1] in _OPS:  # "(expr) eq x" is not supported
                self.i = save
                raise ValueError("unsupported expression")
            return lambda g: bool(e(g))
        left = self.operand()
        tok = self.peek()
        if tok[0] == "kw" and tok[1] in _OPS:
            self.take()
            right = self.operand()
            op = tok[1]
            return lambda g: _cmp(op, left(g), right(g))
        return lambda g: bool(left(g))

    def operand(self):
        kind, val = self.peek()
        if kind == "lit":
            self.take()
            return lambda g: val
        if kind == "name":
            self.take()
            if self.peek()[0] == "lp":
                return self.func(val.lower())
            path = val
            if is_write_only_path(path):
                return lambda g: None  # never readable, so never filterable (no oracle for a password)
            return lambda g: g(path)
        raise ValueError("expected an operand")

    def func(self, name):
        self.take("lp")
        args = [self.operand()]
        while self.peek()[0] == "comma":
            self.take()
            args.append(self.operand())
        self.take("rp")
        if name in ("startswith", "endswith") and len(args) == 2:
            a, b = args
            meth = str.startswith if name == "startswith" else str.endswith

            def f(g):
                x, y = a(g), b(g)
                return isinstance(x, str) and isinstance(y, str) and meth(x.lower(), y.lower())
            return f
        if name == "substringof" and len(args) == 2:
            a, b = args
            return lambda g: isinstance(a(g), str) and isinstance(b(g), str) and a(g).lower() in b(g).lower()
        raise ValueError(f"unsupported function {name}")


def compile_filter(text: str | None):
    """Returns ``pred(getter) -> bool`` or None for no filter; ``getter(path)`` resolves a property path."""
    if text is None or not text.strip():
        return None
    try:
        return _Parser(_tokenize(text)).parse()
    except ValueError as exc:
        raise bad_query("$filter", text, f"Unsupported or invalid filter expression: {exc}") from exc


def dict_getter(d: dict[str, Any]) -> Callable[[str], Any]:
    def g(path: str) -> Any:
        cur: Any = d
        for part in path.split("/"):
            if not isinstance(cur, dict):
                return None
            cur = cur.get(part)
        return cur
    return g


def parse_select(text: str | None):
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names or None


def apply_select(d: dict, names) -> dict:
    if not names:
        return d
    out = {}
    for n in names:
        if "/" in n:
            head = n.split("/", 1)[0]
            if head in d:
                out[head] = d[head]
        elif n in d:
            out[n] = d[n]
    return out
