"""What a Lambda container loads at init and what it leaves for the request that needs it.

An on-demand cold start pays for every module a handler imports before it can answer anything, so handlers import
what every request needs and reach the rest through `lazy_module`: a route's models, services and repositories load
on the first request that hits the route. Where the init is paid ahead of any request (provisioned concurrency, a
SnapStart snapshot), `preload` loads them at init instead, so the first request finds them in memory.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, Final

# AWS_LAMBDA_INITIALIZATION_TYPE: "on-demand", "provisioned-concurrency" or "snap-start".
ENV_INITIALIZATION_TYPE: Final = "AWS_LAMBDA_INITIALIZATION_TYPE"
PAID_AHEAD_INITIALIZATIONS: Final = frozenset({"provisioned-concurrency", "snap-start"})


class LazyModule(ModuleType):
    """A stand-in for a module that imports it on the first attribute read, then behaves as the module.

    Route annotations may name `module.Model` with `from __future__ import annotations`: Powertools evaluates them
    in the handler's globals when the route is first resolved, which is when the import happens.
    """

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.load(), attribute)

    def load(self) -> ModuleType:
        """Import the module now; later reads find its attributes on the stand-in and never come back here."""
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return module


def lazy_module(name: str) -> ModuleType:
    """The module called `name`, imported on its first attribute read (free if something imported it already)."""
    return LazyModule(name)


def init_paid_ahead() -> bool:
    """Whether this container's init runs before any request waits on it (provisioned concurrency, SnapStart)."""
    return os.environ.get(ENV_INITIALIZATION_TYPE) in PAID_AHEAD_INITIALIZATIONS


def preload(*modules: ModuleType | str) -> None:
    """Import the given modules (lazy stand-ins or names) now if the init is paid ahead; leave them for first use
    otherwise. Nothing is opened or connected: a snapshot must not hold a connection it would resume with."""
    if not init_paid_ahead():
        return
    for module in modules:
        if isinstance(module, LazyModule):
            module.load()
        else:
            importlib.import_module(module if isinstance(module, str) else module.__name__)
