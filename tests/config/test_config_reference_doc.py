"""docs/config-reference.md documents exactly the fields the models accept, required or not."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from hyphal.config.models import (
    base,
    destination_rule,
    hyphal,
    security,
    service_entry,
    virtual_service,
)
from hyphal.config.models.base import Model, ResourceModel

DOC = Path(__file__).resolve().parents[2] / "docs" / "config-reference.md"
MODELS = sorted(
    {
        cls
        for mod in (base, hyphal, virtual_service, destination_rule, service_entry, security)
        for cls in vars(mod).values()
        if inspect.isclass(cls)
        and issubclass(cls, Model)
        and not issubclass(cls, ResourceModel)
        and cls is not Model
    },
    key=lambda c: c.__name__,
)


def sections() -> dict[str, dict[str, str]]:
    """`### \\`Name\\`` heading -> {field: default cell} from the table under it."""
    out: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in DOC.read_text().splitlines():
        head = re.match(r"^#{2,4} `(\w+)`", line)
        if head:
            current = out.setdefault(head.group(1), {})
            continue
        if line.startswith("#"):
            current = None
            continue
        row = re.match(r"^\| `(\w+)` \| [^|]* \| ([^|]*) \|", line)
        if row and current is not None:
            current[row.group(1)] = row.group(2).strip()
    return out


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_documented(model: type[Model]) -> None:
    documented = sections().get(model.__name__)
    assert documented is not None, f"no section for {model.__name__}"
    fields = {(f.alias or n): f for n, f in model.model_fields.items()}
    assert set(documented) == set(fields)
    for name, f in fields.items():
        assert (documented[name] == "required") == f.is_required(), name


def test_every_kind_and_api_version_documented() -> None:
    from hyphal.config.models import KINDS

    text = DOC.read_text()
    for kind, cls in KINDS.items():
        heading = next(line for line in text.splitlines() if line.startswith(f"## {kind} ("))
        for av in cls.API_VERSIONS:
            assert av.rsplit("/", 1)[1] in heading
