"""The registry type every package fills with its own config group's options.

An option is a name, the config instance that defines it (its dataclass's defaults and
``__post_init__`` range checks are the option's only definition) and what implements it (a
class, a builder function, a loader; None for an option that needs nothing, such as ``none``).
Each package owns one registry (``robustctl.models.OPTIONS``, ``robustctl.losses.OPTIONS``, ...)
and adds an option in the module that implements it, so a new option is one module; the
application layer (:mod:`robustctl.options`) reads every package's registry and stores the
configs in Hydra's ConfigStore. Pure Python.

    >>> OPTIONS = OptionRegistry("loss")
    >>> OPTIONS.add(LossConfig(name="ce"), build_ce)
    >>> OPTIONS.implementation("ce")(cfg)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from robustctl.errors import ConfigError

C = TypeVar("C")


class OptionRegistry(Generic[C]):
    """The options of config group ``group``, in the order they were added."""

    def __init__(self, group: str) -> None:
        self.group = group
        self._configs: dict[str, C] = {}
        self.implementations: dict[str, Any] = {}

    def add(self, config: C, implementation: Any = None, *, name: str | None = None) -> C:
        """Register option ``name`` (default: ``config.name``); a name is registered once."""
        name = name or getattr(config, "name", "")
        if not name:
            raise ValueError(f"{self.group}: an option needs a name (config {config!r})")
        if name in self._configs:
            raise ValueError(f"{self.group}: option {name!r} is registered twice")
        self._configs[name] = config
        self.implementations[name] = implementation
        return config

    def configs(self) -> dict[str, C]:
        """``{option: its default config}``: what the application stores in Hydra."""
        return dict(self._configs)

    def implementation(self, name: str) -> Any:
        """What implements option ``name``; an unknown name is refused with the valid ones."""
        if name not in self._configs:
            raise ConfigError(
                f"{self.group}: unknown option {name!r} — "
                f"valid {self.group} options: {', '.join(sorted(self._configs))}"
            )
        return self.implementations[name]

    def __contains__(self, name: object) -> bool:
        return name in self._configs

    def __iter__(self) -> Iterator[str]:
        return iter(self._configs)

    def __len__(self) -> int:
        return len(self._configs)

    def __repr__(self) -> str:
        return f"OptionRegistry({self.group!r}: {', '.join(self._configs)})"
