"""Declared task parameters: their types, defaults and allowed values.

A task declares its params once; the spec validator uses the declarations to
reject a bad sweep file before anything runs, to coerce values into canonical
form (so that `1` and `1.0` for a float param give the same unit id), and the
store uses them to give every param its own typed column.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pyarrow as pa

_MISSING = object()

#: Python types a param may declare, with their Arrow column types. Params of
#: type list or dict are stored as canonical JSON strings.
ARROW_TYPES: dict[type, pa.DataType] = {
    bool: pa.bool_(),
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    list: pa.string(),
    dict: pa.string(),
}


class ParamError(ValueError):
    """A param value that cannot be accepted; the message names what is allowed."""


@dataclass(frozen=True)
class Param:
    """One task parameter.

    `choices` may be a sequence or a zero-argument callable (so registries that
    grow after import, like the model zoo, are read when validating).
    `check` is an extra validator returning a list of error messages.
    `added`: the version that added this param to an existing task (e.g. "0.2.0"). While such
    a param holds its default it is left out of the unit id, so units stored before it existed
    keep their ids and are not run again; its default must therefore compute what the task
    computed before. A param without `added` is hashed always (see Task.identity).
    `path` marks a file path param (see the field).
    """

    name: str
    type: type
    default: Any = _MISSING
    help: str = ""
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    check: Callable[[Any], list[str]] | None = field(default=None, compare=False)
    added: str | None = None
    #: A file path (or a list of them): relative ones are relative to the results root,
    #: kept relative in unit ids and rows, resolved only where the unit runs.
    path: bool = False

    def __post_init__(self) -> None:
        if self.type not in ARROW_TYPES:
            raise TypeError(f"param {self.name}: unsupported type {self.type!r}")
        if self.added is not None and self.required:
            raise TypeError(f"param {self.name}: a param added to an existing task needs a "
                            "default (the behaviour before it existed)")

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def allowed_choices(self) -> list[Any] | None:
        if self.choices is None:
            return None
        return list(self.choices() if callable(self.choices) else self.choices)

    def describe(self) -> str:
        """One line for `harness list tasks`."""
        parts = [f"{self.name}: {self.type.__name__}"]
        if not self.required:
            parts.append(f"= {json.dumps(self.default)}")
        else:
            parts.append("(required)")
        choices = self.allowed_choices()
        if choices is not None:
            parts.append(f"one of {', '.join(map(str, choices))}")
        if self.min is not None or self.max is not None:
            parts.append(f"range {self.range_text()}")
        if self.help:
            parts.append(f"— {self.help}")
        return " ".join(parts)

    def range_text(self) -> str:
        lo = "-inf" if self.min is None else repr(self.min)
        hi = "inf" if self.max is None else repr(self.max)
        return f"{'(' if self.min_exclusive else '['}{lo}, {hi}]"

    def coerce(self, value: Any) -> Any:
        """Return the canonical value or raise ParamError naming what is allowed."""
        v = _coerce_type(self.type, value)
        if v is _MISSING:
            raise ParamError(
                f"expected {self.type.__name__}, got {type(value).__name__} {value!r}"
            )
        _check_finite(v)
        choices = self.allowed_choices()
        if choices is not None and v not in choices:
            raise ParamError(
                f"unknown value {v!r}; allowed: {', '.join(map(str, choices))}"
            )
        if self.min is not None and (v < self.min or (self.min_exclusive and v == self.min)):
            raise ParamError(f"{v!r} out of range {self.range_text()}")
        if self.max is not None and v > self.max:
            raise ParamError(f"{v!r} out of range {self.range_text()}")
        if self.check is not None:
            errors = self.check(v)
            if errors:
                raise ParamError("; ".join(errors))
        return v


def _check_finite(value: Any) -> None:
    """Refuse NaN and infinities anywhere in a value: NaN equals nothing (not even the same
    unit's id on a re-run) and JSON, which unit ids hash, has neither. No param gives
    infinity a meaning; one that needs "no limit" uses 0 (e.g. `unit_timeout`)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ParamError(f"{value!r} is not a finite number; NaN and infinities are refused "
                         "(give a finite value)")
    if isinstance(value, (list, dict)):
        try:
            canonical_json(value)
        except ValueError:
            raise ParamError("contains NaN or an infinity, which a unit id cannot hash; give "
                             "finite numbers") from None


def _parse_float(text: str) -> Any:
    """A float written as text (`"1e-4"`, quoted in YAML), in the forms Python's float() reads."""
    try:
        return float(text)
    except ValueError:
        return _MISSING


def _coerce_type(kind: type, value: Any) -> Any:
    # bool is an int subclass: never let True pass as 1 or 1 as True.
    if kind is bool:
        return value if isinstance(value, bool) else _MISSING
    if kind is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _MISSING
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return _parse_float(value) if isinstance(value, str) else _MISSING
    if kind is str:
        return value if isinstance(value, str) else _MISSING
    if kind is list:
        return list(value) if isinstance(value, (list, tuple)) else _MISSING
    if kind is dict:
        return dict(value) if isinstance(value, dict) else _MISSING
    return _MISSING


def is_sweep_axis(param: Param, value: Any) -> bool:
    """Whether a spec value lists several values to sweep over.

    For scalar params any list is a sweep axis. For list-typed params only a
    list of lists is (a flat list is one value); for dict-typed params a list
    of dicts is.
    """
    if not isinstance(value, list):
        return False
    if param.type is list:
        return bool(value) and all(isinstance(v, list) for v in value)
    return True


def column_value(param: Param, value: Any) -> Any:
    """Value as stored in the param's column (JSON text for list/dict)."""
    if param.type in (list, dict):
        return canonical_json(value)
    return value


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the same text on every machine."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
