"""vCPUs per Azure VM size, for the account core quotas.

Guarantees: `vcpus` is total (any string, or None, gives a positive count) and case-insensitive, with or
without the ``Standard_`` prefix. A size in ``VCPUS`` (the common Batch sizes, from the Azure VM size
pages) gives its vCPU count; any other size gives the number that follows the family letters in Azure's
naming convention (``Standard_<family><vCPUs><features>_<version>``: ``Standard_D4as_v5`` -> 4,
``Standard_NC24ads_A100_v4`` -> 24), which is the vCPU count of every current series; a name without
that number counts as ``UNKNOWN_VCPUS``. Retired sizes whose number is not their vCPU count (classic A5-A7,
D11-D15 v2) are in the table.
"""
from __future__ import annotations

import re

UNKNOWN_VCPUS = 1
_NAMED = re.compile(r"^(?:standard|basic)_([a-z]+)(\d+)")


def _series(pattern: str, sizes: tuple[int, ...]) -> dict[str, int]:
    return {pattern.format(n): n for n in sizes}


def _table() -> dict[str, int]:
    t: dict[str, int] = {}
    general = (2, 4, 8, 16, 32, 48, 64)
    for version, sizes in (("v3", general), ("v4", general), ("v5", (*general, 96))):
        for family in ("d", "e"):
            for features in ("", "s", "d", "ds", "a", "as", "ads"):
                t.update(_series(f"standard_{family}{{}}{features}_{version}", sizes))
    t.update(_series("standard_f{}s_v2", (2, 4, 8, 16, 32, 48, 64, 72)))
    t.update(_series("standard_f{}", (1, 2, 4, 8, 16)))
    t.update(_series("standard_f{}s", (1, 2, 4, 8, 16)))
    t.update(_series("standard_a{}_v2", (1, 2, 4, 8)))
    t.update(_series("standard_a{}m_v2", (2, 4, 8)))
    for prefix in ("standard_d", "standard_ds"):
        t.update({f"{prefix}{n}_v2": v for n, v in ((1, 1), (2, 2), (3, 4), (4, 8), (5, 16))})
        t.update({f"{prefix}{n}_v2": v for n, v in ((11, 2), (12, 4), (13, 8), (14, 16), (15, 20))})
    t.update({f"standard_a{n}": v for n, v in ((0, 1), (1, 1), (2, 2), (3, 4), (4, 8), (5, 2), (6, 4), (7, 8))})
    t.update({f"basic_a{n}": v for n, v in ((0, 1), (1, 1), (2, 2), (3, 4), (4, 8))})
    t.update({"standard_b1s": 1, "standard_b1ms": 1, "standard_b2s": 2, "standard_b2ms": 2, "standard_b4ms": 4,
              "standard_b8ms": 8})
    # GPU sizes
    t.update({"standard_nc6": 6, "standard_nc12": 12, "standard_nc24": 24, "standard_nc6s_v3": 6,
              "standard_nc12s_v3": 12, "standard_nc24s_v3": 24, "standard_nc4as_t4_v3": 4,
              "standard_nc8as_t4_v3": 8, "standard_nc16as_t4_v3": 16, "standard_nc64as_t4_v3": 64,
              "standard_nc24ads_a100_v4": 24, "standard_nc48ads_a100_v4": 48, "standard_nc96ads_a100_v4": 96,
              "standard_nv6": 6, "standard_nv12": 12, "standard_nv24": 24, "standard_nv12s_v3": 12,
              "standard_nd40rs_v2": 40, "standard_nd96asr_v4": 96})
    return t


VCPUS: dict[str, int] = _table()


def normalise(vm_size: str | None) -> str:
    """The lower-case size name with its ``standard_`` (or ``basic_``) prefix."""
    name = (vm_size or "").strip().lower()
    if name and not name.startswith(("standard_", "basic_")):
        name = "standard_" + name
    return name


def vcpus(vm_size: str | None) -> int:
    """How many vCPUs one node of this size counts against a core quota."""
    return lookup(vm_size)[0]


def lookup(vm_size: str | None) -> tuple[int, str]:
    """The vCPUs of a size and where the number comes from: ``table``, ``name`` or ``default``."""
    name = normalise(vm_size)
    if name in VCPUS:
        return VCPUS[name], "table"
    m = _NAMED.match(name)
    if m and int(m.group(2)) > 0:
        return int(m.group(2)), "name"
    return UNKNOWN_VCPUS, "default"
