"""A small evaluator for the common subset of Batch autoscale formulas.

Supported: statements ``name = expr;`` (service variables ``$Name`` and user variables), numbers,
``+ - * /``, comparisons, ``&& || !``, the ternary ``c ? a : b``, functions ``min max avg sum len ceil
floor round abs lg ln log std val``, ``TimeInterval_*`` constants and the sample methods
``$PendingTasks.GetSample(...)`` / ``.GetSamplePercent(...)`` / ``.Count()`` on ``$PendingTasks``,
``$ActiveTasks``, ``$RunningTasks``, ``$SucceededTasks``, ``$FailedTasks``, ``$CPUPercent`` (0),
``$MemoryBytes`` (0), ``$PreemptedNodeCount``... Sample methods return the *current* value as a one-sample vector
(the emulator keeps no history; GetSamplePercent answers 100). Strings in double quotes, and ``time()`` /
``time("<W3C-DTF or RFC 1123 date>")``: a timestamp, held as seconds since the epoch, so that timestamp -
timestamp is a time interval in seconds like ``TimeInterval_*``. A formula the evaluator cannot parse raises
FormulaError (the API answers 400 AutoScalingFormulaSyntaxError on enable/evaluate).
"""
from __future__ import annotations

import math
import re
import time
from datetime import datetime
from email.utils import parsedate_to_datetime


class FormulaError(Exception):
    pass


_TIME = {"timeinterval_zero": 0, "timeinterval_100ns": 1e-7, "timeinterval_microsecond": 1e-6,
         "timeinterval_millisecond": 1e-3, "timeinterval_second": 1, "timeinterval_minute": 60,
         "timeinterval_hour": 3600, "timeinterval_day": 86400, "timeinterval_week": 604800,
         "timeinterval_year": 31536000}
_SAMPLED = {"$pendingtasks", "$activetasks", "$runningtasks", "$succeededtasks", "$failedtasks", "$cpupercent",
            "$wallclockseconds", "$memorybytes", "$diskbytes", "$diskreadbytes", "$diskwritebytes",
            "$diskreadops", "$diskwriteops", "$networkinbytes", "$networkoutbytes", "$sampletotalnodecount",
            "$samplenodecount", "$samplependingtasks", "$sampleactivetasks", "$samplerunningtasks",
            "$preemptednodecount"}
_TOK = re.compile(r"\s*(?:(?P<str>\"[^\"\n]*\")|(?P<num>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
                  r"|(?P<name>\$?[A-Za-z_][A-Za-z0-9_]*)|(?P<op>==|!=|<=|>=|&&|\|\||[-+*/<>!?:=;(),.]))")


def _tokens(text):
    out, pos = [], 0
    text = re.sub(r"//[^\n]*", "", text)
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOK.match(text, pos)
        if not m or m.end() == pos:
            raise FormulaError(f"unexpected character {text[pos:pos + 10]!r}")
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None  # every alternative of _TOK is a named group
        out.append((kind, m.group(kind)))
    return out


def _scalar(v):
    if isinstance(v, list):
        if not v:
            return 0.0
        return float(v[-1]) if len(v) == 1 else float(sum(v) / len(v))
    if isinstance(v, str):
        return v
    return float(v)


def _flatten(args):
    out = []
    for a in args:
        if isinstance(a, list):
            out.extend(a)
        else:
            out.append(a)
    return out


def _arith(op, a, b):
    if isinstance(a, list) or isinstance(b, list):
        a_l = a if isinstance(a, list) else [a]
        b_l = b if isinstance(b, list) else [b]
        n = max(len(a_l), len(b_l))
        a_l = a_l * n if len(a_l) == 1 else a_l
        b_l = b_l * n if len(b_l) == 1 else b_l
        return [_arith(op, x, y) for x, y in zip(a_l, b_l, strict=False)]
    a, b = float(a), float(b)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b == 0:
            raise FormulaError("division by zero")
        return a / b
    raise FormulaError(op)


def _time(args) -> float:
    """time(): now; time("date"): that date (W3C-DTF, e.g. 2026-12-05T10:00:00Z, or RFC 1123); epoch seconds."""
    if not args:
        return time.time()
    text = args[0]
    if not isinstance(text, str):
        raise FormulaError("time() takes a date string")
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00")) if "T" in text or "-" in text[:5] \
            else parsedate_to_datetime(text)
    except (ValueError, TypeError) as exc:
        raise FormulaError(f"time(): {text!r} is not a W3C-DTF or RFC 1123 date") from exc
    if stamp.tzinfo is None:
        raise FormulaError(f"time(): {text!r} has no time zone")
    return stamp.timestamp()


def _std(v: list[float]) -> float:
    if not v:
        return 0.0
    mean = sum(v) / len(v)
    return math.sqrt(sum((x - mean) ** 2 for x in v) / len(v))


_FUNCS = {
    "min": lambda args: min(_flatten(args)), "max": lambda args: max(_flatten(args)),
    "avg": lambda args: (lambda v: sum(v) / len(v) if v else 0.0)(_flatten(args)),
    "sum": lambda args: sum(_flatten(args)), "len": lambda args: float(len(_flatten(args))),
    "ceil": lambda args: float(math.ceil(_scalar(args[0]))), "floor": lambda args: float(math.floor(_scalar(args[0]))),
    "round": lambda args: float(round(_scalar(args[0]))), "abs": lambda args: abs(_scalar(args[0])),
    "lg": lambda args: math.log2(_scalar(args[0])), "ln": lambda args: math.log(_scalar(args[0])),
    "log": lambda args: math.log(_scalar(args[0]), _scalar(args[1])) if len(args) > 1 else math.log10(_scalar(args[0])),
    "std": lambda args: _std(_flatten(args)),
    "val": lambda args: float(_flatten([args[0]])[int(_scalar(args[1]))]),
    "time": _time,
}


class _P:
    def __init__(self, toks):
        self.t, self.i = toks, 0

    def peek(self, k=0):
        j = self.i + k
        return self.t[j] if j < len(self.t) else (None, None)

    def take(self, val=None):
        tok = self.peek()
        if tok[0] is None or (val is not None and tok[1] != val):
            raise FormulaError(f"expected {val!r} but found {tok[1]!r}")
        self.i += 1
        return tok

    def program(self):
        stmts = []
        while self.peek()[0] is not None:
            if self.peek()[1] == ";":
                self.take()
                continue
            kind, name = self.take()
            if kind != "name":
                raise FormulaError(f"expected a variable name, found {name!r}")
            self.take("=")
            stmts.append((name, self.expr()))
            if self.peek()[0] is not None:
                self.take(";")
        return stmts

    def expr(self):
        cond = self.or_()
        if self.peek()[1] == "?":
            self.take()
            a = self.expr()
            self.take(":")
            b = self.expr()
            return lambda env: a(env) if _truthy(cond(env)) else b(env)
        return cond

    def _binary(self, sub, ops, fn):
        left = sub()
        while self.peek()[1] in ops:
            op = self.take()[1]
            right = sub()
            left = (lambda lhs, rhs, o: lambda env: fn(o, lhs(env), rhs(env)))(left, right, op)
        return left

    def or_(self):
        return self._binary(self.and_, ("||",), lambda o, a, b: 1.0 if _truthy(a) or _truthy(b) else 0.0)

    def and_(self):
        return self._binary(self.cmp, ("&&",), lambda o, a, b: 1.0 if _truthy(a) and _truthy(b) else 0.0)

    def cmp(self):
        def f(o, a, b):
            a, b = _scalar(a), _scalar(b)
            return 1.0 if {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[o] else 0.0
        return self._binary(self.add, ("==", "!=", "<", "<=", ">", ">="), f)

    def add(self):
        return self._binary(self.mul, ("+", "-"), _arith)

    def mul(self):
        return self._binary(self.unary, ("*", "/"), _arith)

    def unary(self):
        if self.peek()[1] == "-":
            self.take()
            inner = self.unary()
            return lambda env: _arith("*", inner(env), -1.0)
        if self.peek()[1] == "!":
            self.take()
            inner = self.unary()
            return lambda env: 0.0 if _truthy(inner(env)) else 1.0
        return self.postfix()

    def postfix(self):
        kind, val = self.take()
        if kind == "num":
            num = float(val)
            return lambda env: num
        if kind == "str":
            text = val[1:-1]
            return lambda env: text
        if val == "(":
            e = self.expr()
            self.take(")")
            return e
        if kind != "name":
            raise FormulaError(f"unexpected {val!r}")
        low = val.lower()
        if self.peek()[1] == "(":  # function call
            return self._call(val, low)
        if self.peek()[1] == ".":  # sample method
            return self._sample_method(val, low)
        if low in _TIME:
            v = float(_TIME[low])
            return lambda env: v
        if low.startswith("$") or low in ("true", "false"):
            if low == "true":
                return lambda env: 1.0
            if low == "false":
                return lambda env: 0.0
            return lambda env: env.get(low, 0.0)
        # user variable or bare word (e.g. taskcompletion)
        return lambda env: env.get(low, val)

    def _call(self, name, low):
        self.take("(")
        args = []
        if self.peek()[1] != ")":
            args.append(self.expr())
            while self.peek()[1] == ",":
                self.take()
                args.append(self.expr())
        self.take(")")
        fn = _FUNCS.get(low)
        if fn is None:
            raise FormulaError(f"unsupported function {name}")
        return lambda env: fn([a(env) for a in args])

    def _sample_method(self, name, low):
        self.take(".")
        meth = self.take()[1].lower()
        self.take("(")
        depth = 1
        while depth:  # arguments are ignored (no history): skip them
            tok = self.take()[1]
            depth += tok == "("
            depth -= tok == ")"
        if low not in _SAMPLED:
            raise FormulaError(f"{name} has no samples")
        if meth == "getsample":
            return lambda env: [env.get(low, 0.0)]
        if meth == "getsamplepercent":
            return lambda env: 100.0
        if meth == "count":
            return lambda env: 1.0
        if meth in ("historybegintime", "getsampleperiod"):
            return lambda env: 0.0
        raise FormulaError(f"unsupported method {meth}")


def _truthy(v):
    v = _scalar(v)
    return bool(v) if not isinstance(v, str) else bool(v)


def parse(formula: str):
    if not isinstance(formula, str) or not formula.strip():
        raise FormulaError("empty formula")
    if len(formula) > 8192:
        raise FormulaError("formula too long")
    return _P(_tokens(formula)).program()


def _fmt(v):
    v = _scalar(v)
    if isinstance(v, str):
        return v
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


def evaluate(formula: str, inputs: dict) -> tuple[dict, str]:
    """Run ``formula``. ``inputs`` keys: lowercased ``$`` variable names. Returns (values, results_string)."""
    stmts = parse(formula)
    env = {k.lower(): v for k, v in inputs.items()}
    env.setdefault("$nodedeallocationoption", "requeue")
    order = ["$TargetDedicatedNodes", "$TargetLowPriorityNodes", "$NodeDeallocationOption"]
    names = {n.lower(): n for n in order}
    for name, fn in stmts:
        try:
            env[name.lower()] = fn(env)
        except FormulaError:
            raise
        except (ValueError, ZeroDivisionError, IndexError, TypeError, OverflowError) as exc:
            raise FormulaError(f"evaluation error in {name}: {exc}") from exc
        names.setdefault(name.lower(), name)
    vals = {}
    for low, orig in names.items():
        v = env.get(low)
        if v is None:
            continue
        vals[orig] = v
    def node_count(key):
        v = _scalar(env.get(key.lower(), 0))
        if isinstance(v, str):
            raise FormulaError(f"{key} must be numeric")
        return max(0, int(v)) if v == v and not math.isinf(v) else 0
    out = {"dedicated": node_count("$TargetDedicatedNodes"), "lowPriority": node_count("$TargetLowPriorityNodes"),
           "deallocation": str(_scalar(env.get("$nodedeallocationoption", "requeue")))}
    results = ";".join(f"{orig}={_fmt(v)}" for orig, v in vals.items())
    return out, results
