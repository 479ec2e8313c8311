"""The public API is what ``import rerankd`` binds: derived from ``vars(rerankd)``, not a hard-coded list.

Submodules (``rerankd.batching`` once something imported it) are bound too, but they are reached by
importing them, not exported members; private names and the module dunders are not exported either.
"""

from __future__ import annotations

import inspect
import sys
from types import ModuleType

import rerankd

#: Private-looking names that are exported on purpose.
EXPORTED_DUNDERS = {"__version__"}


def public_members() -> set[str]:
    return {name for name, value in vars(rerankd).items()
            if (not name.startswith("_") or name in EXPORTED_DUNDERS) and not isinstance(value, ModuleType)}


def test_all_is_exactly_the_public_members() -> None:
    assert set(rerankd.__all__) == public_members()
    assert len(rerankd.__all__) == len(set(rerankd.__all__)), "a name is listed twice in __all__"


def test_every_exported_member_is_defined_in_a_rerankd_module() -> None:
    for name in rerankd.__all__:
        member = getattr(rerankd, name)
        if name in EXPORTED_DUNDERS:
            continue
        assert inspect.isclass(member) or inspect.isfunction(member), f"{name} is a {type(member).__name__}"
        module = member.__module__
        assert module == "rerankd" or module.startswith("rerankd."), f"{name} comes from {module}"
        # The module it names really holds it under that name: no stale re-export.
        assert getattr(sys.modules[module], member.__name__) is member, name
        assert member.__name__ == name, f"{name} is exported under another name than its own ({member.__name__})"


def test_version_is_a_string() -> None:
    assert isinstance(rerankd.__version__, str) and rerankd.__version__
