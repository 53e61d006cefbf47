"""``Record``: a frozen value class for the critical path, declared like a frozen dataclass.

Why not ``@dataclass(frozen=True)``: importing ``dataclasses`` pulls in ``inspect`` (ast, dis, tokenize, ...), a
third of a whole ``start`` (bench/README.md, "Import costs on the critical path"). ``start``, ``delete``,
``-info`` and ``-v`` run while containerd waits, so their value types use this instead.

Rules:
- Fields are the class's annotations, in order; a class attribute of the same name is the default. Subclassing
  a Record subclass is not supported (one level only).
- Construction by position or keyword, as a dataclass ``__init__``; unknown, duplicate or missing fields raise
  TypeError.
- Instances are immutable (assignment and deletion raise AttributeError, like FrozenInstanceError), compare
  equal when the type and all fields are equal, hash by their fields, and ``replace(**changes)`` returns a
  modified copy (the counterpart of ``dataclasses.replace``).
"""

from __future__ import annotations

class Record:
    _fields: tuple[str, ...] = ()
    _defaults: dict[str, object] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._fields = tuple(cls.__dict__.get("__annotations__", {}))
        cls._defaults = {name: cls.__dict__[name] for name in cls._fields if name in cls.__dict__}
        for name in cls._defaults:  # the instance's own attribute answers, never a class default
            delattr(cls, name)

    def __init__(self, *args: object, **kwargs: object) -> None:
        if len(args) > len(self._fields):
            raise TypeError(f"{type(self).__name__}() takes {len(self._fields)} positional arguments")
        values = dict(zip(self._fields, args))
        for name, value in kwargs.items():
            if name not in self._fields:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {name!r}")
            if name in values:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {name!r}")
            values[name] = value
        for name in self._fields:
            if name not in values:
                if name not in self._defaults:
                    raise TypeError(f"{type(self).__name__}() missing required argument {name!r}")
                values[name] = self._defaults[name]
        for name in self._fields:
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of frozen {type(self).__name__}")

    def _astuple(self) -> tuple[object, ...]:
        return tuple(self.__dict__[name] for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._astuple() == other._astuple()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self._astuple()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={self.__dict__[name]!r}" for name in self._fields)
        return f"{type(self).__name__}({fields})"

    def replace(self, **changes: object) -> Record:
        return type(self)(**{**self.__dict__, **changes})
