"""The field-spec type of a request contract and what runs it: ``Contract.validate`` (the dialect's validator) and
``Contract.struct`` (the msgspec Struct the OpenAPI document shows). Both read the same ``Field`` declarations.

A contract checks its fields one by one in declaration order, which is the documented message order: the first
field that is wrong raises ``Refused`` with that field's declared message. Cross-field rules (``Requires``) are
separate, so a dialect can run a check of its own between the fields and the rules (RenderCAD: a GPU-only studio
model is refused before 4K-needs-pro, as it always was).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, Literal

import msgspec

Kind = Literal["string", "integer", "number", "object", "any"]
# (value, the caller's options) -> the value to keep; raises Refused. Where a rule depends on a setting
# (allow_http_webhooks) or is a document of its own (a Movie): the declaration still gives the schema.
Check = Callable[[Any, Mapping[str, Any]], Any]
CONTRACT = "__contract__"  # the attribute of a generated Struct that names its contract
FALSY: tuple[Any, ...] = (None, "", 0, [], {})  # `value or default`: 0 stands for False and 0.0 (both == 0)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # a field the body leaves out (unlike null, which a field may take as a value)


class Refused(ValueError):
    """A request the contract refuses: ``message`` is the declared one; ``hint`` the optional detail some
    dialects add (Kodisc's "message"); ``status`` 400, or a rule's own (422)."""

    def __init__(self, message: str, *, hint: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.hint, self.status = message, hint, status


@cache
def _ecma(pattern: str) -> re.Pattern[str]:
    """A JSON Schema pattern as Python runs it: searched, with ``$`` at the very end (ECMAScript's ``$``, which
    Python's would also let match before a trailing newline)."""
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern)


def integral(value: Any) -> Any:
    """30.0 is the integer 30 in JSON (and to a JavaScript client); any other value is left as it is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


@dataclass(frozen=True)
class Field:
    """One request field. ``message``: the error when the value is refused ("" with ``choices``: "<name> must be
    one of: a, b"; "" with ``check``: the check gives its own messages and the generic checks are skipped)."""

    name: str
    type: Kind
    message: str = ""
    required: bool = False
    default: Any = None  # what an absent (or ``blank``) value becomes
    nullable: bool = False  # null is a value of its own, kept as None
    blank: tuple[Any, ...] = ()  # values taken as absent (compared with ==)
    choices: tuple[Any, ...] = ()
    pattern: str | None = None  # JSON Schema (ECMAScript) semantics, see _ecma
    nonblank: bool = False  # a string with something other than spaces
    min_length: int | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    over: str | None = None  # the hint when above maximum (the message stays the documented one)
    digits: bool = False  # an integer may come as a string of digits (form-minded clients send "8")
    lenient: bool = False  # a value of another type is taken as absent
    nested: Contract | None = None  # an object with a contract of its own
    check: Check | None = None  # runs after the generic checks
    unused: str = ""  # why the renderers ignore this field ("" when they use it): the schema says so
    description: str = ""
    doc: Mapping[str, Any] = field(default_factory=dict)  # JSON Schema that documents what ``check`` enforces

    def refusal(self, prefix: str = "", extra: tuple[Any, ...] = ()) -> str:
        if self.message or not self.choices:
            return self.message
        return f"{prefix}{self.name} must be one of: {', '.join(map(str, (*self.choices, *extra)))}"

    def run(self, data: Mapping[str, Any], options: Mapping[str, Any], prefix: str, extra: tuple[Any, ...]) -> Any:
        value = data.get(self.name, MISSING)
        if value is MISSING or value in self.blank:
            return self._absent(options, prefix)
        if value is None and self.nullable:
            return None
        if self.check is not None and not self.message:
            return self.check(value, options)
        refused = Refused(self.refusal(prefix, extra))
        value = self._typed(value, refused)
        if value is MISSING:  # lenient: of another type
            return self._absent(options, prefix)
        if self.choices and value not in (*self.choices, *extra):
            raise refused
        if isinstance(value, str):
            if (self.nonblank and not value.strip()) or (self.pattern and not _ecma(self.pattern).search(value)) \
                    or len(value) < (self.min_length or 0) or len(value) > (self.max_length or len(value)):
                raise refused
        elif self.type in ("integer", "number"):
            if self.minimum is not None and not value >= self.minimum:  # `not >=`: NaN is refused too
                raise refused
            if self.maximum is not None and not value <= self.maximum:
                raise Refused(refused.message, hint=self.over)
        if self.nested is not None:
            value = self.nested.validate(value, options)
        return self.check(value, options) if self.check is not None else value

    def _absent(self, options: Mapping[str, Any], prefix: str) -> Any:
        if self.required:
            raise Refused(self.refusal(prefix))
        return self.nested.validate({}, options) if self.nested is not None else self.default

    def _typed(self, value: Any, refused: Refused) -> Any:
        if self.type == "string" and not isinstance(value, str):
            raise refused
        if self.type == "integer":
            if self.digits and isinstance(value, str) and value.strip().isdigit():
                value = int(value.strip())
            value = integral(value)
            if type(value) is not int:  # bool is no integer here
                raise refused
        if self.type == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise refused
        if self.type == "object" and not isinstance(value, dict):
            if self.lenient:
                return MISSING
            raise refused
        return value

    # ---- the schema ------------------------------------------------------------------------------------------
    def annotation(self, types: Mapping[str, Any]) -> Any:
        """The field's type for msgspec's JSON Schema: constraints, enum, description and any ``doc``."""
        if self.type == "object":
            base: Any = self.nested.struct() if self.nested else types.get(self.name, dict[str, Any])
            return base if self.nested or self.name in types else Annotated[base, self._meta()]
        base = {"string": str, "integer": int, "number": float, "any": Any}[self.type]
        return Annotated[base, self._meta()]

    def _meta(self) -> msgspec.Meta:
        extra: dict[str, Any] = {**({"enum": list(self.choices)} if self.choices else {}), **self.doc}
        text = self.description
        if self.unused:
            text = f"{text} Not used by the renderers: {self.unused}".strip()
            extra["x-unused"] = True
        constraints: dict[str, Any] = {  # Meta is overloaded per type: pass only what this field uses
            "pattern": self.pattern or (r"\S" if self.nonblank else None),
            "min_length": self.min_length or (1 if self.nonblank else None), "max_length": self.max_length,
            "ge": self.minimum, "le": self.maximum}
        return msgspec.Meta(**{k: v for k, v in constraints.items() if v is not None},
                            description=text or None, extra_json_schema=extra or None)

    def member(self, types: Mapping[str, Any]) -> tuple[Any, ...]:
        """(name, type) or (name, type, default) for msgspec.defstruct."""
        kind = self.annotation(types)
        if self.required:
            return (self.name, kind)
        if self.type != "any" and (self.nullable or self.lenient or self.default is None):
            return (self.name, kind | None, None if self.nested else self.default)
        return (self.name, kind, self.default)


@dataclass(frozen=True)
class Forbid:
    """Values of a field refused before any field is checked, with a message of their own."""

    field: str
    values: tuple[Any, ...]
    message: str
    status: int = 400


@dataclass(frozen=True)
class Requires:
    """A cross-field rule: when ``when`` is ``value``, ``then`` must be ``then_value`` (4K needs the pro model)."""

    when: str
    value: Any
    then: str
    then_value: Any
    message: str
    status: int = 422

    def broken(self, values: Mapping[str, Any]) -> bool:
        return values.get(self.when) == self.value and values.get(self.then) != self.then_value

    def schema(self) -> dict[str, Any]:
        return {"if": {"properties": {self.when: {"const": self.value}}, "required": [self.when]},
                "then": {"properties": {self.then: {"const": self.then_value}}, "required": [self.then]}}


@dataclass(frozen=True)
class Contract:
    """A request: ``fields`` in the documented message order; ``name`` is its schema's name in the document."""

    name: str
    doc: str
    fields: tuple[Field, ...]
    first: tuple[Forbid, ...] = ()
    rules: tuple[Requires, ...] = ()
    prefix: str = ""  # before generated messages ("renderOptions." in a nested object)

    def __getitem__(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    def messages(self) -> tuple[str, ...]:
        """The static messages, in the order they are checked (a check's own messages are not listed)."""
        found = [f.refusal(self.prefix) for f in self.fields] + [r.message for r in self.first] \
            + [r.message for r in self.rules]
        return tuple(dict.fromkeys(m for m in found if m))

    def validate(self, data: Mapping[str, Any], options: Mapping[str, Any] | None = None, *,
                 extra_choices: Mapping[str, tuple[Any, ...]] | None = None) -> dict[str, Any]:
        """The declared fields, checked in order, defaults filled in (the rules are ``enforce``'s)."""
        for rule in self.first:
            if data.get(rule.field) in rule.values:
                raise Refused(rule.message, status=rule.status)
        return {f.name: f.run(data, options or {}, self.prefix, (extra_choices or {}).get(f.name, ()))
                for f in self.fields}

    def enforce(self, values: Mapping[str, Any]) -> None:
        """The cross-field rules, on validated values."""
        for rule in self.rules:
            if rule.broken(values):
                raise Refused(rule.message, status=rule.status)

    def struct(self, *, types: Mapping[str, Any] | None = None, before: tuple[tuple[Any, ...], ...] = (),
               after: tuple[tuple[Any, ...], ...] = (), name: str | None = None,
               doc: str | None = None) -> type[msgspec.Struct]:
        """The request as a Struct for the OpenAPI document: ``types`` describes object fields whose structure is
        declared elsewhere (a Movie); ``before``/``after``: fields other code validates (defstruct tuples);
        ``name``/``doc``: another request with the same fields (the legacy render). The struct's ``__contract__``
        is this contract, for ``schema_extra``."""
        members = [*before, *(f.member(types or {}) for f in self.fields), *after]
        struct = msgspec.defstruct(name or self.name, members, kw_only=True, module=__name__)
        rules = " ".join(f"{r.message} ({r.status})." for r in self.rules)
        struct.__doc__ = f"{doc or self.doc} {rules}".strip()
        setattr(struct, CONTRACT, self)  # noqa: B010 - a class attribute mypy cannot see on a made class
        return struct

    def schema_extra(self) -> dict[str, Any]:
        """What the rules add to the struct's JSON Schema (msgspec has no place for them)."""
        return {"allOf": [r.schema() for r in self.rules]} if self.rules else {}
