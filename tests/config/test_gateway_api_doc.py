"""docs/config-reference.md documents exactly the Gateway API fields the models accept."""

from __future__ import annotations

import inspect

import pytest
from test_config_reference_doc import sections

from hyphal.config.models import gateway_api, gateway_grpc
from hyphal.config.models.base import Model, ResourceModel

MODELS = sorted(
    (
        cls
        for module in (gateway_api, gateway_grpc)
        for cls in vars(module).values()
        if inspect.isclass(cls)
        and issubclass(cls, Model)
        and not issubclass(cls, ResourceModel)
        and cls.__module__ == module.__name__
    ),
    key=lambda c: c.__name__,
)


def test_models_found() -> None:
    assert len(MODELS) >= 25


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_documented(model: type[Model]) -> None:
    documented = sections().get(model.__name__)
    assert documented is not None, f"no section for {model.__name__}"
    fields = {(f.alias or n): f for n, f in model.model_fields.items()}
    assert set(documented) == set(fields)
    for name, f in fields.items():
        assert (documented[name] == "required") == f.is_required(), name
