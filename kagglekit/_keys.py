"""Config keys declared once, beside the field: help text, choices, range and when the key applies.

`key` makes a dataclass field that carries its rules; `check_keys` checks every field of a config in
one loop; `load_keys` reads a YAML file and ``--set`` overrides into any such dataclass (typed by the
field, the closest valid key suggested for an unknown one, renamed keys still read with a warning).
Light on purpose: of the kit it imports only `kagglekit._io` (to read the YAML file), and no heavy library.
About 440 lines: the declaration, the one check loop and the one loader are one mechanism that
both config dataclasses use; split, each part would only be read with the others.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _show(value: Any) -> str:
    """A value as a user writes it: ``true``, ``'cosine'``, ``0.5``."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _bound(number: float) -> str:
    """A range bound: ``0``, ``1``, ``0.5`` (not ``0.0``)."""
    return str(int(number)) if float(number).is_integer() else repr(number)


# --- conditions: when a key does something -------------------------------------------------------


@dataclass(frozen=True)
class Cond:
    """A test on another key's value, with the words for "it applies when ..." and "with ...".

    Args:
        test: ``value -> bool``, true where the dependent key does something.
        wants: the condition in words, given the controlling key's name (``"{key} > 0"``).
        without: say "without {key}" rather than "with {key}={value}" when the test fails.
    """

    test: Callable[[Any], bool]
    wants: str
    without: bool = False

    def failing(self, name: str, value: Any) -> str:
        return f"without {name}" if self.without else f"with {name}={_show(value)}"


def _as_cond(spec: Any) -> Cond:
    if isinstance(spec, Cond):
        return spec
    if isinstance(spec, tuple):
        return Cond(lambda v, allowed=spec: v in allowed, "{key} is one of " + str(list(spec)))
    return Cond(lambda v, wanted=spec: v == wanted, "{key}=" + _show(spec))


def is_set() -> Cond:
    """The controlling key is set (a non-empty text, a non-zero number)."""
    return Cond(bool, "{key} is set", without=True)


def above(bound: float) -> Cond:
    """The controlling key is greater than `bound`."""
    return Cond(lambda v: v > bound, "{key} > " + _bound(bound))


def contains(*terms: str) -> Cond:
    """The controlling key, an expression such as ``"bce+0.5*huber"``, names one of `terms`."""
    def test(value: str) -> bool:
        named = [t.strip() for t in str(value).replace("*", "+").split("+")]
        return any(term in named for term in terms)

    return Cond(test, "{key} names " + (repr(terms[0]) if len(terms) == 1 else f"one of {list(terms)}"))


@dataclass(frozen=True)
class When:
    """Every condition must hold for the key to do something; checked in the order given."""

    conditions: tuple  # ((controlling key, Cond), ...)

    def first_failing(self, cfg: Any) -> tuple[str, Cond] | None:
        for name, cond in self.conditions:
            if not cond.test(getattr(cfg, name)):
                return name, cond
        return None


def when(**conditions: Any) -> When:
    """``when(scheduler="cosine")``, ``when(adversary=("fgm", "pgd"))``, ``when(ema=above(0))``:
    a literal must be equal, a tuple must contain the value, a `Cond` must pass."""
    return When(tuple((name, _as_cond(spec)) for name, spec in conditions.items()))


# --- ranges a config key shares with the component that takes the value ------------------------------


@dataclass(frozen=True)
class Range:
    """Bounds of a number (``>=``, ``>``, ``<=``, ``<``), declared once for a config key and for the
    component that takes the same value as an argument, so both refuse exactly the same values."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def bounds(self) -> dict:
        """The set bounds, as `key` takes them: ``key(0.1, "...", **RATE.bounds())``."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def text(self, integer: bool = False) -> str:
        if self == Range():
            return "a finite number"
        if self.le is None and self.lt is None:
            if self.gt is not None:
                return f"> {_bound(self.gt)}"
            return f"{_bound(self.ge)} or more" if integer and self.ge >= 1 else f">= {_bound(self.ge)}"
        low = f"[{_bound(self.ge)}" if self.ge is not None else f"({_bound(self.gt)}"
        high = f"{_bound(self.le)}]" if self.le is not None else f"{_bound(self.lt)})"
        return f"in {low}, {high}"

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def check(self, name: str, value: float, *, what: str, fix: str) -> float:
        """`value`, or a ValueError naming the argument, the value, the range and the fix."""
        if not self.contains(value):
            raise ValueError(f"{name}={value}: {what} must be {self.text()}; {fix}.")
        return value


RATE = Range(ge=0, lt=1)  # dropout and Mixout probabilities (the config's dropout keys, models.surgery)
LAYER_DECAY = Range(gt=0, le=1)  # the config's layer_decay, train.optim.param_groups
POSITIVE = Range(gt=0)  # e.g. the config's huber_delta, losses.get_loss
SEED = Range(ge=0, le=2**32 - 1)  # the configs' seed and fold_seed: numpy's seeds are 32-bit
SEED_HINT = "a seed is a whole number that numpy takes, e.g. 42"


# --- the declaration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """The rules of one config key (see `key`)."""

    help: str
    choices: tuple | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    also: tuple = ()
    hint: str = ""
    applies: When | None = None
    item: type | None = None
    parse: Callable[[Any, str], Any] | None = None

    @property
    def range(self) -> Range:
        return Range(self.ge, self.gt, self.le, self.lt)

    def range_text(self, integer: bool) -> str:
        return self.range.text(integer)

    def in_range(self, value: float) -> bool:
        return value in self.also or self.range.contains(value)

    @property
    def has_range(self) -> bool:
        return any(bound is not None for bound in (self.ge, self.gt, self.le, self.lt))


def key(default: Any, help: str, *, choices: Iterable | None = None, ge: float | None = None, gt: float | None = None,
        le: float | None = None, lt: float | None = None, also: tuple = (), hint: str = "", applies: When | None = None,
        item: type | None = None, parse: Callable[[Any, str], Any] | None = None) -> Any:
    """A dataclass field with its rules beside it.

    Args:
        default: the default value; its type is the key's type (a list or dict default is copied per instance).
        help: what the key does, in a line.
        choices: the closed set of valid values.
        ge, gt, le, lt: bounds of a number (``>=``, ``>``, ``<=``, ``<``).
        also: values allowed outside the range (sentinels such as -1 "keep the checkpoint's own"). A float
            key refuses inf and nan, with or without a range, unless `also` lists ``math.inf``.
        hint: the usual fix, appended to a range error.
        applies: `when(...)`: set away from its default while this does not hold, the key is an error.
        item: the type of a list's items (``str`` or ``float``).
        parse: ``(value, source) -> value`` for a key no plain type describes.

    Example:
        >>> num_cycles: float = key(0.5, "cosine: half-waves", gt=0, applies=when(scheduler="cosine"))
    """
    rules = Key(help=help, choices=tuple(choices) if choices is not None else None, ge=ge, gt=gt, le=le, lt=lt,
                also=tuple(also), hint=hint, applies=applies, item=item, parse=parse)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"key": rules})
    return dataclasses.field(default=default, metadata={"key": rules})


def declared(cls: type) -> dict[str, tuple[dataclasses.Field, Key | None]]:
    """Every field of a config dataclass with its `Key` (None where a field has no declaration)."""
    return {f.name: (f, f.metadata.get("key")) for f in dataclasses.fields(cls)}


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _what(cfg: Any) -> str:
    return getattr(cfg, "WHAT", "config")


# --- the one loop -----------------------------------------------------------------------------------


def check_keys(cfg: Any) -> None:
    """Check type, choices, range and applicability of every declared field of `cfg`, in field order.

    Raises:
        TypeError: a value of the wrong type (e.g. a text where a number belongs).
        ValueError: a value outside its choices or range, or a key set where it does nothing; the
            message names the key, the value and the fix.
    """
    what = _what(cfg)
    for name, (f, rules) in declared(type(cfg)).items():
        if rules is None:
            continue
        value, default = getattr(cfg, name), default_of(f)
        _check_type(what, name, value, default, rules)
        if rules.choices is not None and value not in rules.choices:
            raise ValueError(f"{what} key {name!r}: unknown value {value!r}; valid values are {list(rules.choices)}.")
        if rules.item is float and not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in value):
            raise ValueError(f"{what} key {name!r} must list finite numbers, got {value!r}.")
        # a float key must be finite even without a declared range: nan fails no test written as "not x < 0"
        if (rules.has_range or isinstance(default, float)) and not rules.in_range(value):
            others = "".join(f", or {_bound(v)}" for v in rules.also)
            hint = f"; {rules.hint}" if rules.hint else ""
            raise ValueError(f"{what} key {name!r} must be {rules.range_text(isinstance(default, int))}{others}, got {value!r}{hint}.")
        if rules.applies is not None and value != default:
            failing = rules.applies.first_failing(cfg)
            if failing is not None:
                ctrl, cond = failing
                raise ValueError(f"{what} key {name!r} ({_show(value)}) does nothing {cond.failing(ctrl, getattr(cfg, ctrl))}: it "
                                 f"applies only when {cond.wants.replace('{key}', ctrl)}. Leave it at its default ({_show(default)}), "
                                 f"or set {ctrl}.")


def _check_type(what: str, name: str, value: Any, default: Any, rules: Key) -> None:
    if rules.parse is not None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise TypeError(f"{what} key {name!r}: expected {type(default).__name__}, got {value!r}; write e.g. "
                        f"{name}={_example(default)} (its default).")


def _example(default: Any) -> str:
    return str(default).lower() if isinstance(default, bool) else str(default)


# --- folders a run writes into -------------------------------------------------------------------------

def check_output_dir(cfg: Any, name: str = "output_dir") -> None:
    """Refuse an output folder (the key `name` of `cfg`) that is empty, ``.``, the working directory or above it.

    A run writes ``config.yaml``, ``run.json``, ``oof.csv`` ... into its folder: pointed at the working
    directory (or above), it would overwrite the user's own ``config.yaml`` there. Run by the
    `validate` of both configs, so nothing has been written when it fails.

    Raises:
        ValueError: naming the key, its value, the folder it resolves to and the fix.
    """
    value = getattr(cfg, name)
    here = Path.cwd().resolve()
    folder = Path(value.strip() or ".").resolve()
    if folder != here and folder not in here.parents:
        return
    place = "empty: the working directory" if not value.strip() else (
        "the working directory" if folder == here else f"{folder}, a folder above the working directory")
    example = default_of(declared(type(cfg))[name][0])
    raise ValueError(f"{_what(cfg)} key {name!r} is {value!r} ({place}): the run's files would land among yours and overwrite "
                     f"any of the same name (config.yaml, ...). Give the run a folder of its own, e.g. {name}={example}.")


# --- durations --------------------------------------------------------------------------------------

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: Any, source: str = "", name: str = "time_budget") -> float:
    """Seconds from ``41400``, ``"41400"``, ``"11h30m"``, ``"90m"``, ``"1h 5m 30s"`` or ``"2.5h"``; 0 or empty: none.

    Raises:
        ValueError: naming `name`, `source` and the value, with the accepted forms.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0.0
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        seconds = float(value)
    else:
        import re

        text = str(value).strip().lower().replace(" ", "")
        parts = re.fullmatch(r"((?:\d+(?:\.\d+)?[dhms])+)", text)
        try:
            seconds = float(text) if parts is None else sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([dhms])", text))
        except ValueError:
            seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        where = f" in {source}" if source else ""
        raise ValueError(f"{name}{where}: {value!r} is not a duration; write seconds (41400) or hours and minutes "
                         f"(\"11h30m\", \"90m\"); 0 or empty means no limit.")
    return seconds


# --- the one loader ---------------------------------------------------------------------------------


def coerce(cls: type, name: str, value: Any, source: str) -> Any:
    """Convert `value` (from YAML, or a ``--set`` string) to the type of field `name` of `cls`."""
    f, rules = declared(cls)[name]
    what, default = getattr(cls, "WHAT", "config"), default_of(f)
    if rules is not None and rules.parse is not None:
        return rules.parse(value, source)
    if isinstance(default, list):
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v.strip()]
        items = [v.strip() if isinstance(v, str) else v for v in items]
        kind = rules.item if rules is not None and rules.item is not None else str
        try:
            return [kind(v) for v in items]
        except (TypeError, ValueError):
            raise ValueError(f"{what} key {name!r} in {source}: expected a list of {kind.__name__}, got {value!r}.") from None
    kind = type(default)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    text = "" if value is None else str(value).strip()
    if kind is str:
        return text
    try:
        if kind is bool and text.lower() in _BOOLS:
            return _BOOLS[text.lower()]
        if kind is int and float(text) == int(float(text)):
            return int(float(text))
        if kind is float:
            return float(text)
    except (ValueError, OverflowError):
        pass
    raise ValueError(f"{what} key {name!r} in {source}: expected {kind.__name__}, got {value!r}; write e.g. "
                     f"{name}={_example(default)} (its default).")


def parse_overrides(items: Iterable[str] | None) -> dict[str, str]:
    """Turn ``["epochs=2", "lr=3e-5"]`` into a dict; a malformed item names itself and the form.

    A key given twice takes its last value (``--set lr=1 --set lr=2`` sets lr=2), as command lines
    usually do: a notebook can append an override to a shared list of ``--set`` items.
    """
    out: dict[str, str] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set {item!r}: expected key=value, e.g. --set epochs=2")
        out[name.strip()] = value
    return out


def unknown_key(cls: type, name: str, source: str) -> ValueError:
    """The error for a key `cls` does not have, naming the closest valid key."""
    names = list(declared(cls))
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else f" Valid keys: {', '.join(names)}."
    return ValueError(f"unknown {getattr(cls, 'WHAT', 'config')} key {name!r} in {source}.{hint}")


def _typed(cls: type, raw: Mapping, source: str) -> dict[str, Any]:
    """One source's keys, renamed keys mapped to their new names (with a warning), typed."""
    what = getattr(cls, "WHAT", "config")
    renamed, removed = getattr(cls, "RENAMED_KEYS", {}), getattr(cls, "REMOVED_KEYS", {})
    names, out = declared(cls), {}
    for name, value in raw.items():
        name = str(name)
        if name in removed:
            warnings.warn(f"{what} key {name!r} in {source} is ignored and has been removed: {removed[name]} Delete it.",
                          UserWarning, stacklevel=4)
            continue
        if name in renamed:
            new = renamed[name]
            if new in raw:
                raise ValueError(f"{what} keys {name!r} and {new!r} in {source} are the same key ({name!r} is its old name): "
                                 f"keep only {new}.")
            warnings.warn(f"{what} key {name!r} in {source} is renamed {new!r}: write {new}={_show(value)}. The old name "
                          "still loads for now.", UserWarning, stacklevel=4)
            name = new
        if name not in names:
            raise unknown_key(cls, name, source)
        out[name] = coerce(cls, name, value, source)
    return out


def load_keys(cls: type, path: str | Path | None = None, overrides: Mapping[str, Any] | Iterable[str] | None = None) -> Any:
    """An instance of the config dataclass `cls` from an optional YAML file, then overrides; not yet validated.

    Shared by every config of the kit (`kagglekit.config.load_config`, `kagglekit.config_pretrain.load_pretrain_config`).

    Args:
        cls: a dataclass whose fields are made by `key`; its ``WHAT`` names it in errors ("config"),
            ``RENAMED_KEYS`` maps old names to new ones, ``REMOVED_KEYS`` old names to why they went.
        path: YAML file holding a mapping, or None.
        overrides: a mapping, or ``key=value`` strings as given to ``--set``; applied after the file.
    """
    from kagglekit._io import read_yaml

    what = getattr(cls, "WHAT", "config")
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{what} file not found: {path}. Pass the YAML file given to --config.")
        values.update(_typed(cls, read_yaml(path, what=f"{what} file"), str(path)))
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(overrides)
        values.update(_typed(cls, overrides, "--set"))
    return _with_recipe_defaults(cls, values)


def _with_recipe_defaults(cls: type, values: dict[str, Any]) -> Any:
    """``cls(**values)`` where the keys left unset take the recipe's own defaults (``cls.RECIPE_DEFAULTS[task]``).

    A recipe default whose ``applies`` rule fails once the set keys are in (``target_grouping=false`` given,
    so a grouping cap would apply to nothing) falls back to the class default: it is the recipe's choice
    for its own settings, never an error the user did not make.
    """
    task = values.get("task", getattr(cls, "task", None))
    recipe = {k: v for k, v in getattr(cls, "RECIPE_DEFAULTS", {}).get(task, {}).items() if k not in values}
    cfg, base = cls(**{**recipe, **values}), cls()
    rules = {name: rule for name, (_, rule) in declared(cls).items()}
    changed = True
    while changed:  # a fallback can make another recipe default apply to nothing: until none does
        changed = False
        for name in recipe:
            rule = rules.get(name)
            if getattr(cfg, name) != getattr(base, name) and rule is not None and rule.applies is not None \
                    and rule.applies.first_failing(cfg) is not None:
                setattr(cfg, name, getattr(base, name))
                changed = True
    return cfg
