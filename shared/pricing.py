"""What a run's nodes cost: a price table (VM size -> price per node-hour) and the estimate (pure).

The table ships as data (shared/prices.json) and can be replaced by another of the same shape;
`PriceTable.load` validates it and names the offending field. An estimate is never guessed: a
size the table does not list, or spot time without a spot price, gives no amount and a reason.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

from shared.errors import ConfigurationError

DEFAULT_TABLE = Path(__file__).with_name("prices.json")

_TOP_FIELDS = {"currency", "region", "date", "source", "note", "prices"}
_PRICE_FIELDS = {"dedicated", "spot"}
_CURRENCY_RE = re.compile(r"[A-Z]{3}")


class PriceTableError(ConfigurationError):
    """The price table cannot be used. `field` names the offending field (a JSON path) or is None."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        self.message = message
        super().__init__(f"price table: {field}: {message}" if field else f"price table: {message}")


@dataclass(frozen=True)
class Price:
    """One VM size's price per node-hour; `spot` None: the table has no spot price for it."""

    vm_size: str  # as the table spells it
    dedicated: float
    spot: float | None


@dataclass(frozen=True)
class CostEstimate:
    """What the run's node time cost, or why that is not known (`amount` None, `reason` says why)."""

    vm_size: str
    currency: str
    region: str
    date: str
    source: str
    amount: float | None = None
    reason: str | None = None

    def as_report(self) -> dict[str, Any]:
        """report.json's keys: {"cost": {...}} with the prices used, or {"cost_omitted": reason}."""
        if self.amount is None:
            return {"cost_omitted": self.reason}
        return {"cost": {"amount": self.amount, "currency": self.currency, "vm_size": self.vm_size,
                         "prices": {"region": self.region, "date": self.date, "source": self.source}}}


@dataclass(frozen=True)
class PriceTable:
    currency: str
    region: str
    date: str  # ISO date the prices were taken
    source: str
    prices: Mapping[str, Price]  # keyed by the lower-cased VM size

    @classmethod
    def load(cls, data: bytes | str) -> PriceTable:
        """A table from its JSON text; raises PriceTableError naming the field that is wrong."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
            raise PriceTableError(f"not valid JSON: {e}") from None
        return cls.from_json(doc)

    @classmethod
    def default(cls) -> PriceTable:
        """The table shipped with the app (shared/prices.json)."""
        return cls.load(DEFAULT_TABLE.read_bytes())

    @classmethod
    def from_json(cls, doc: Any) -> PriceTable:
        if not isinstance(doc, dict):
            raise PriceTableError(f"must be a JSON object, not {_kind(doc)}")
        unknown = sorted(set(doc) - _TOP_FIELDS)
        if unknown:
            raise PriceTableError(f"unknown field; the fields are {', '.join(sorted(_TOP_FIELDS))}", field=unknown[0])
        currency = _text(doc, "currency")
        if not _CURRENCY_RE.fullmatch(currency):
            raise PriceTableError(f"{currency!r} is not an ISO 4217 code such as \"USD\"", field="currency")
        when = _text(doc, "date")
        try:
            date.fromisoformat(when)
        except ValueError:
            raise PriceTableError(f"{when!r} is not a date such as \"2026-12-02\"", field="date") from None
        if "note" in doc and not isinstance(doc["note"], str):
            raise PriceTableError(f"must be a string, not {_kind(doc['note'])}", field="note")
        entries = doc.get("prices")
        if not isinstance(entries, dict) or not entries:
            raise PriceTableError('must be an object of VM sizes such as {"Standard_D2s_v3": {"dedicated": 0.096}}'
                                  f", not {_kind(entries)}", field="prices")
        prices: dict[str, Price] = {}
        for size, entry in entries.items():
            key = size.strip().lower()
            if not key:
                raise PriceTableError("a VM size must not be empty", field="prices")
            if key in prices:
                raise PriceTableError(f"listed twice (sizes are compared ignoring case; also {prices[key].vm_size!r})",
                                      field=f"prices.{size}")
            prices[key] = _price(size, entry)
        return cls(currency, _text(doc, "region"), when, _text(doc, "source"), prices)

    def price(self, vm_size: str) -> Price | None:
        """The price of `vm_size` (any case), or None when the table does not list it."""
        return self.prices.get(vm_size.strip().lower())

    def estimate(self, node_seconds_dedicated: float, node_seconds_spot: float, vm_size: str) -> CostEstimate:
        """The cost of that much node time, from list prices. Unknown size, or spot time the table
        has no spot price for: no amount, and the reason (a partial sum would understate the cost)."""
        if node_seconds_dedicated < 0 or node_seconds_spot < 0:
            raise ValueError("node time cannot be negative")
        known = CostEstimate(vm_size, self.currency, self.region, self.date, self.source)
        price = self.price(vm_size)
        if price is None:
            return replace(known, reason=f"the price table ({self.region}, {self.date}) has no price for VM size "
                                         f"{vm_size!r}")
        amount = node_seconds_dedicated / 3600 * price.dedicated
        if node_seconds_spot > 0:
            if price.spot is None:
                return replace(known, reason=f"the price table ({self.region}, {self.date}) has no spot price "
                                             f"for VM size {vm_size!r}, and the run had spot nodes")
            amount += node_seconds_spot / 3600 * price.spot
        return replace(known, amount=round(amount, 4))


def _price(size: str, entry: Any) -> Price:
    where = f"prices.{size}"
    if not isinstance(entry, dict):
        raise PriceTableError(f'must be an object such as {{"dedicated": 0.096, "spot": 0.02}}, not {_kind(entry)}',
                              field=where)
    unknown = sorted(set(entry) - _PRICE_FIELDS)
    if unknown:
        raise PriceTableError("unknown field; the fields are dedicated and spot", field=f"{where}.{unknown[0]}")
    if "dedicated" not in entry:
        raise PriceTableError("missing: the pay-as-you-go price per node-hour", field=f"{where}.dedicated")
    dedicated = _rate(entry["dedicated"], f"{where}.dedicated")
    spot = entry.get("spot")
    return Price(size.strip(), dedicated, None if spot is None else _rate(spot, f"{where}.spot"))


def _rate(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise PriceTableError(f"must be a price per node-hour (a number, 0 or more), not {value!r}", field=field)
    return float(value)


def _text(doc: dict, field: str) -> str:
    value = doc.get(field)
    if not isinstance(value, str) or not value.strip():
        raise PriceTableError(f"must be a non-empty string, not {_kind(value)}", field=field)
    return value.strip()


def _kind(value: Any) -> str:
    if value is None:
        return "missing or null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), repr(value))
