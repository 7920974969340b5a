"""The price table and the cost estimate: shipped data, lookups, arithmetic and validation."""
from __future__ import annotations

import json

import pytest

from shared.errors import ConfigurationError
from shared.pricing import Price, PriceTable, PriceTableError

COMMON_SIZES = ["Standard_D2s_v3", "Standard_D4s_v3", "Standard_D8s_v3", "Standard_D16s_v3",
                "Standard_D2s_v5", "Standard_D4s_v5", "Standard_D8s_v5", "Standard_D16s_v5",
                "Standard_F2s_v2", "Standard_F4s_v2", "Standard_F8s_v2", "Standard_F16s_v2",
                "Standard_E2s_v3", "Standard_E4s_v3", "Standard_E8s_v3", "Standard_E16s_v3",
                "Standard_NC6s_v3", "Standard_NC4as_T4_v3"]


def table(**prices) -> PriceTable:
    doc = {"currency": "USD", "region": "eastus", "date": "2026-12-02", "source": "test", "prices": prices}
    return PriceTable.load(json.dumps(doc).encode())


def test_the_shipped_table_says_where_and_when_its_prices_come_from():
    shipped = PriceTable.default()
    assert (shipped.currency, shipped.region, shipped.date) == ("USD", "eastus", "2026-12-02")
    assert "Retail Prices API" in shipped.source and "Linux" in shipped.source


@pytest.mark.parametrize("size", COMMON_SIZES)
def test_the_shipped_table_prices_the_common_batch_sizes(size):
    price = PriceTable.default().price(size)
    assert price is not None and 0 < price.dedicated < 10


def test_lookups_ignore_case_and_the_default_size_is_priced():
    shipped = PriceTable.default()
    assert shipped.price("standard_d2s_v3") == shipped.price("STANDARD_D2S_V3") == Price("Standard_D2s_v3", 0.096, None)
    assert shipped.price("Standard_D2s_v3_nonexistent") is None


def test_dedicated_node_time_is_priced_per_hour():
    estimate = PriceTable.default().estimate(2 * 3600 + 1800, 0, "standard_d2s_v3")
    assert estimate.amount == pytest.approx(2.5 * 0.096)  # 0.24
    assert estimate.as_report() == {"cost": {"amount": 0.24, "currency": "USD", "vm_size": "standard_d2s_v3",
                                             "prices": {"region": "eastus", "date": "2026-12-02",
                                                        "source": PriceTable.default().source}}}


def test_spot_node_time_at_the_spot_price():
    prices = table(Standard_D4s_v5={"dedicated": 0.192, "spot": 0.0384})
    # 1 h dedicated + 3 h spot = 0.192 + 3 * 0.0384 = 0.3072
    assert prices.estimate(3600, 3 * 3600, "standard_d4s_v5").amount == pytest.approx(0.3072)
    assert prices.estimate(0, 0, "Standard_D4s_v5").amount == 0


def test_an_unknown_size_has_no_cost_and_says_why():
    estimate = PriceTable.default().estimate(3600, 0, "Standard_M416ms_v2")
    assert estimate.amount is None and estimate.reason is not None
    assert "Standard_M416ms_v2" in estimate.reason and "eastus" in estimate.reason
    assert estimate.as_report() == {"cost_omitted": estimate.reason}


def test_spot_time_without_a_spot_price_is_not_priced_at_all():
    estimate = PriceTable.default().estimate(3600, 60, "standard_d2s_v3")
    assert estimate.amount is None and "no spot price" in (estimate.reason or "")
    assert PriceTable.default().estimate(3600, 0, "standard_d2s_v3").amount == 0.096  # no spot time: fine


def test_negative_node_time_is_a_programming_error():
    with pytest.raises(ValueError):
        PriceTable.default().estimate(-1, 0, "standard_d2s_v3")


GOOD = {"currency": "USD", "region": "eastus", "date": "2026-12-02", "source": "s",
        "prices": {"Standard_D2s_v3": {"dedicated": 0.096}}}


@pytest.mark.parametrize("change, field, words", [
    ({"currency": None}, "currency", "non-empty string"),
    ({"currency": "dollars"}, "currency", "ISO 4217"),
    ({"region": ""}, "region", "non-empty string"),
    ({"date": "yesterday"}, "date", "not a date"),
    ({"source": 3}, "source", "non-empty string"),
    ({"note": ["x"]}, "note", "string"),
    ({"prices": {}}, "prices", "object of VM sizes"),
    ({"prices": []}, "prices", "object of VM sizes"),
    ({"prices": {"Standard_D2s_v3": 0.096}}, "prices.Standard_D2s_v3", "must be an object"),
    ({"prices": {"Standard_D2s_v3": {}}}, "prices.Standard_D2s_v3.dedicated", "missing"),
    ({"prices": {"Standard_D2s_v3": {"dedicated": -1}}}, "prices.Standard_D2s_v3.dedicated", "0 or more"),
    ({"prices": {"Standard_D2s_v3": {"dedicated": True}}}, "prices.Standard_D2s_v3.dedicated", "a number"),
    ({"prices": {"Standard_D2s_v3": {"dedicated": "0.1"}}}, "prices.Standard_D2s_v3.dedicated", "a number"),
    ({"prices": {"Standard_D2s_v3": {"dedicated": 0.1, "spot": "cheap"}}}, "prices.Standard_D2s_v3.spot", "a number"),
    ({"prices": {"Standard_D2s_v3": {"dedicated": 0.1, "dedicatd": 1}}}, "prices.Standard_D2s_v3.dedicatd",
     "unknown field"),
    ({"prices": {"Standard_D2s_v3": {"dedicated": 0.1}, "standard_d2s_v3": {"dedicated": 0.2}}},
     "prices.standard_d2s_v3", "listed twice"),
    ({"currencies": "USD"}, "currencies", "unknown field"),
])
def test_a_bad_table_is_refused_naming_the_field(change, field, words):
    with pytest.raises(PriceTableError) as caught:
        PriceTable.load(json.dumps({**GOOD, **change}))
    assert caught.value.field == field
    assert words in caught.value.message and field in str(caught.value)


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b"[1]", b"null"])
def test_bytes_that_are_no_table_are_refused_as_configuration(data):
    with pytest.raises(ConfigurationError, match="price table"):
        PriceTable.load(data)


def test_an_override_table_replaces_the_shipped_one():
    override = PriceTable.load(json.dumps({**GOOD, "region": "westeurope", "currency": "EUR",
                                           "prices": {"Standard_X1": {"dedicated": 1.0, "spot": 0.25}}}).encode())
    assert override.price("standard_d2s_v3") is None
    assert override.estimate(3600, 3600, "standard_x1").as_report()["cost"]["amount"] == 1.25
