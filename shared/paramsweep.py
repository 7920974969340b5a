"""Parameter sweeps: the `{"sweep": {...}}` input form, one item per combination of values.

`parse` validates the form into a `Sweep`, or raises JobFileError naming the parameter. A `Sweep`
is a lazy sequence of items: its length is counted arithmetically and an item is computed from its
index, so a sweep is never materialised. Intake hands it to the inline-items splitter as it would a
list (`jobfile.ItemsInput`), which generates the items in order as it writes the shards.

Order (docs/jobfile.md): parameters in the order the job file writes them, the last varying fastest
(nested loops, or itertools.product); a zip group stands where its "zip" key is written, its
parameters moving together. An item is a JSON object of every parameter, keys in that same order.

The job file is untrusted: a few bytes can describe astronomically many combinations, so sizes are
multiplied only up to MAX_ITEMS, and range bounds are 64-bit integers (every value stays printable).
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, overload

from shared.errors import JobFileError

# Bounds intake's work whatever the split: writing a million small items as shards takes seconds
# (benchmarks/sweep_bench.py). The task count is checked apart (MAX_TASKS_PER_RUN, as for any items).
MAX_ITEMS = 1_000_000
ZIP = "zip"  # the key of parameter groups that move together; so no parameter is named "zip"
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1

Scalar = str | int | float | bool | None

_TAIL = 4096  # combinations of the last axes listed once, to generate items a block at a time
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_EXAMPLE = '{"alpha": [0.1, 0.2], "seed": {"range": [0, 100]}}'
_VALUES_EXAMPLE = '[0.1, 0.2, 0.5] or {"range": [0, 100]}'


@dataclass(frozen=True)
class Axis:
    """Parameters that move together: one parameter, or a zip group. Every parameter has
    `len(self)` values (a tuple of scalars, or a range)."""

    names: tuple[str, ...]
    values: tuple[Sequence[Scalar], ...]  # one per name

    def __len__(self) -> int:
        return len(self.values[0])

    @property
    def label(self) -> str:
        """For people: "alpha (3)", or "x+y (4)" for a zip group."""
        return f"{'+'.join(self.names)} ({len(self):,})"


@dataclass(frozen=True)
class Sweep(Sequence[dict[str, Scalar]]):
    """The items of a sweep, in order: the cartesian product of its axes, the last varying fastest.

    Guarantee: `len` and indexing cost O(number of axes), whatever the length; iterating or slicing
    computes only the items asked for, in memory bounded by a block of _TAIL items. Every item is a
    new dict."""

    axes: tuple[Axis, ...]

    def __len__(self) -> int:
        size = 1
        for axis in self.axes:
            size *= len(axis)
        return size

    @overload
    def __getitem__(self, index: int) -> dict[str, Scalar]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Scalar]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Scalar] | list[dict[str, Scalar]]:
        if isinstance(index, slice):
            picked = range(len(self))[index]
            if picked.step == 1:
                return list(self._run(picked.start, picked.stop))
            return [self._item(self._digits(i)) for i in picked]
        size = len(self)
        position = index + size if index < 0 else index
        if not 0 <= position < size:
            raise IndexError(f"sweep index {index} out of range for {size} items")
        return self._item(self._digits(position))

    def __iter__(self) -> Iterator[dict[str, Scalar]]:
        return self._run(0, len(self))

    @property
    def shape(self) -> str:
        """For people: "alpha (3) x seed (100) x model (2)"."""
        return " x ".join(a.label for a in self.axes)

    def describe(self) -> str:
        """For people: "600 combinations: alpha (3) x seed (100) x model (2)"."""
        return f"{len(self):,} combinations: {self.shape}"

    def _digits(self, index: int) -> list[int]:
        """The mixed-radix digits of `index`, one per axis, the last axis least significant."""
        digits = [0] * len(self.axes)
        for k in range(len(self.axes) - 1, -1, -1):
            index, digits[k] = divmod(index, len(self.axes[k]))
        return digits

    def _item(self, digits: list[int]) -> dict[str, Scalar]:
        item: dict[str, Scalar] = {}
        for axis, digit in zip(self.axes, digits, strict=True):
            for name, values in zip(axis.names, axis.values, strict=True):
                item[name] = values[digit]
        return item

    # Generating in order, fast: item i is head[i // T] followed by tail[i % T], where the tail is the
    # last axes, T = len(tail) combinations of them listed once (at most _TAIL; or the last axis alone,
    # sliced as needed), and the head the axes before; so each item costs one merge of two dicts.

    @cached_property
    def _head(self) -> Sweep:
        return Sweep(self.axes[:self._split])

    @cached_property
    def _tail(self) -> Sweep:
        return Sweep(self.axes[self._split:])

    @cached_property
    def _split(self) -> int:
        """Where the tail starts: as many last axes as have at most _TAIL combinations, at least one,
        never all (a sweep of several axes has a head)."""
        split, size = len(self.axes) - 1, len(self.axes[-1])
        while split > 1 and size * len(self.axes[split - 1]) <= _TAIL:
            split -= 1
            size *= len(self.axes[split])
        return split

    @cached_property
    def _tail_items(self) -> list[dict[str, Scalar]] | None:
        return list(self._tail) if len(self._tail) <= _TAIL else None

    def _run(self, start: int, stop: int) -> Iterator[dict[str, Scalar]]:
        """Items start..stop-1, in order, generated a block at a time (bounded memory)."""
        if start >= stop:
            return
        if len(self.axes) == 1:
            yield from self._run_axis(start, stop)
            return
        size = len(self._tail)
        first, begin = divmod(start, size)
        last, end = divmod(stop - 1, size)
        for head, prefix in enumerate(self._head._run(first, last + 1), first):
            low = begin if head == first else 0
            high = end + 1 if head == last else size
            for block in range(low, high, _TAIL):
                block_end = min(high, block + _TAIL)
                tails = (self._tail_items[block:block_end] if self._tail_items is not None
                         else self._tail[block:block_end])
                yield from [{**prefix, **tail} for tail in tails]

    def _run_axis(self, start: int, stop: int) -> Iterator[dict[str, Scalar]]:
        (axis,) = self.axes
        for low in range(start, stop, _TAIL):
            high = min(stop, low + _TAIL)
            if len(axis.names) == 1:
                name = axis.names[0]
                yield from [{name: value} for value in axis.values[0][low:high]]
            else:
                rows = zip(*(values[low:high] for values in axis.values), strict=True)
                yield from [dict(zip(axis.names, row, strict=True)) for row in rows]


# ---------------------------------------------------------------- parsing


def parse(value: Any, field: str) -> Sweep:
    """The sweep `value` of a job file (its JSON values already checked: finite numbers, valid
    strings, no repeated keys), at `field` (e.g. "input.sweep").

    Total: returns a Sweep of 1 to MAX_ITEMS items, or raises JobFileError naming the offending
    parameter (or `field` itself for the sweep as a whole)."""
    if not isinstance(value, dict):
        raise JobFileError(f"must be an object of parameters and their values, like {_EXAMPLE}; got "
                           f"{_describe(value)}", field=field)
    if not value:
        raise JobFileError(f"names no parameter; give each parameter its values, like {_EXAMPLE}", field=field)
    axes: list[Axis] = []
    seen: dict[str, str] = {}  # parameter name -> its field, to refuse a name given twice
    for key, spec in value.items():
        if key == ZIP:
            axes.extend(_zip_groups(spec, _join(field, ZIP), seen))
        else:
            path = _join(field, _segment(key))
            _claim(key, path, seen)
            axes.append(Axis((key,), (_values(spec, path),)))
    _check_size(axes, field)
    return Sweep(tuple(axes))


def _zip_groups(value: Any, field: str, seen: dict[str, str]) -> list[Axis]:
    """"zip": one group {"x": [...], "y": [...]} or a list of them; each group is one axis."""
    example = '{"x": [1, 2, 3], "y": ["a", "b", "c"]}'
    if isinstance(value, dict):
        return [_zip_group(value, field, seen)]
    if not isinstance(value, list) or not value:
        found = "an empty list" if value == [] else _describe(value)
        raise JobFileError(f"must be a group of parameters that move together, like {example}, or a "
                           f"non-empty list of such groups; got {found}", field=field)
    groups = []
    for i, group in enumerate(value):
        path = f"{field}[{i}]"
        if not isinstance(group, dict):
            raise JobFileError(f"must be a group of parameters that move together, like {example}; got "
                               f"{_describe(group)}", field=path)
        groups.append(_zip_group(group, path, seen))
    return groups


def _zip_group(group: dict, field: str, seen: dict[str, str]) -> Axis:
    if not group:
        raise JobFileError("is an empty group; give it the parameters that move together, like "
                           "{\"x\": [1, 2, 3], \"y\": [\"a\", \"b\", \"c\"]}", field=field)
    names: list[str] = []
    values: list[Sequence[Scalar]] = []
    for key, spec in group.items():
        path = _join(field, _segment(key))
        if key == ZIP:
            raise JobFileError("a zip group holds parameters, not another \"zip\"; list several groups as "
                               "\"zip\": [{...}, {...}]", field=path)
        _claim(key, path, seen)
        names.append(key)
        values.append(_values(spec, path))
    lengths = {len(v) for v in values}
    if len(lengths) > 1:
        sizes = ", ".join(f"{_excerpt(name)} has {len(v):,}" for name, v in zip(names, values, strict=True))
        raise JobFileError(f"its parameters move together, so each needs as many values as the others: "
                           f"{sizes}. Give them equal lengths, or take a parameter out of the group to "
                           f"sweep it across the others", field=field)
    return Axis(tuple(names), tuple(values))


def _claim(name: str, field: str, seen: dict[str, str]) -> None:
    if not name:
        raise JobFileError("a parameter needs a name (it becomes a key of each item)", field=field)
    match = _CONTROL_RE.search(name)
    if match:
        raise JobFileError(f"the parameter name {_excerpt(name)} contains the control character {match.group()!r}; "
                           f"name parameters on one line, e.g. \"alpha\"", field=field)
    if name in seen:
        raise JobFileError(f"parameter {_excerpt(name)} is also given at {seen[name]}; each parameter has one list of "
                           f"values (an item has one value for it)", field=field)
    seen[name] = field


def _values(spec: Any, field: str) -> Sequence[Scalar]:
    """A parameter's values: a non-empty list of scalars, or {"range": [start, stop(, step)]}."""
    if isinstance(spec, list):
        if not spec:
            raise JobFileError(f"is an empty list, so the sweep would have no combination; give at least one "
                               f"value, e.g. {_VALUES_EXAMPLE}", field=field)
        if len(spec) > MAX_ITEMS:
            raise _too_many(len(spec), field)
        for i, item in enumerate(spec):
            if isinstance(item, (list, dict)):
                raise JobFileError(f"is {_describe(item)}; sweep values are single values (a string, a number, "
                                   f"true, false or null): an item holds one value per parameter. Put "
                                   f"structured values in \"config\", or pick them by a name swept here",
                                   field=f"{field}[{i}]")
        return tuple(spec)
    if isinstance(spec, dict) and "range" in spec:
        extra = [k for k in spec if k != "range"]
        if extra:
            raise JobFileError(f"a range is {{\"range\": [start, stop]}} or {{\"range\": [start, stop, step]}} "
                               f"alone; remove {extra[0]!r}", field=_join(field, _segment(extra[0])))
        return _range(spec["range"], _join(field, "range"))
    raise JobFileError(f"must be a list of values or a range, e.g. {_VALUES_EXAMPLE}; got {_describe(spec)}. "
                       f"For one fixed value write a list of one, e.g. [\"a\"]", field=field)


def _range(spec: Any, field: str) -> range:
    """Python's range(start, stop[, step]) on integers: stop excluded, step not 0."""
    how = "write [start, stop] or [start, stop, step] with whole numbers, as Python's range: stop is excluded"
    if not isinstance(spec, list) or not 2 <= len(spec) <= 3:
        raise JobFileError(f"must be a list of 2 or 3 whole numbers; got {_describe(spec)}; {how}", field=field)
    bounds: list[int] = []
    for i, bound in enumerate(spec):
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        if isinstance(bound, bool) or not isinstance(bound, int):
            raise JobFileError(f"{('start', 'stop', 'step')[i]} is {_describe(bound)}; {how}. For other values "
                               f"list them, e.g. [0.1, 0.2, 0.5]", field=f"{field}[{i}]")
        if not INT64_MIN <= bound <= INT64_MAX:
            raise JobFileError(f"{('start', 'stop', 'step')[i]} is out of range: range bounds are 64-bit "
                               f"integers, from {INT64_MIN} to {INT64_MAX}", field=f"{field}[{i}]")
        bounds.append(bound)
    start, stop, step = (*bounds, 1) if len(bounds) == 2 else bounds
    if step == 0:
        raise JobFileError("step is 0; give a positive step to count up, or a negative one to count down",
                           field=f"{field}[2]")
    length = _range_length(start, stop, step)
    if length == 0:
        way = "above" if step > 0 else "below"
        raise JobFileError(f"{spec} holds no value: with step {step}, stop must be {way} start (stop is excluded)",
                           field=field)
    if length > MAX_ITEMS:
        raise _too_many(length, field)
    return range(start, stop, step)


def _range_length(start: int, stop: int, step: int) -> int:
    """len(range(start, stop, step)), which Python refuses past sys.maxsize."""
    if step > 0:
        return max(0, (stop - start + step - 1) // step)
    return max(0, (start - stop - step - 1) // -step)


def _too_many(count: int, field: str) -> JobFileError:
    return JobFileError(f"has {count:,} values; a sweep may have at most {MAX_ITEMS:,} combinations in all. Sweep "
                        f"fewer values (a larger step), or split the sweep into several job files", field=field)


def _check_size(axes: list[Axis], field: str) -> None:
    """At most MAX_ITEMS combinations; multiplied only as far as the limit (the sizes of a hostile file
    could multiply to a number of millions of digits)."""
    size = 1
    for k, axis in enumerate(axes):
        size *= len(axis)
        if size > MAX_ITEMS:
            named = " x ".join(a.label for a in axes[:k + 1])
            rest = f" x {len(axes) - k - 1:,} more" if k + 1 < len(axes) else ""
            raise JobFileError(f"has more than {MAX_ITEMS:,} combinations ({named}{rest}), the most a sweep may "
                               f"have; sweep fewer values, move parameters that change together into a \"zip\" "
                               f"group, or split the sweep into several job files", field=field)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}"


def _segment(key: str) -> str:
    """A key as a field-path segment: printable (escaped otherwise), at most 64 characters."""
    shown = key if key.isprintable() else ascii(key)[1:-1]
    return shown if len(shown) <= 64 else shown[:61] + "..."


def _excerpt(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"[:60]
    if isinstance(value, str):
        return f"the string {_excerpt(value, 40)}"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return "an object"
