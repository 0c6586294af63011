"""A flow as an object: its declaration edited in memory, saved by ``Project.update_flow``.

The attributes of the declaration (``name``, ``description``, ``source``, ``map``,
``target``, ``dedupe``, ``links``, ``partitions``, ``schedule``, ``sensor``, ``warn_limit``,
``blocking_checks``) are the flow model's own, read and set on the flow::

    flow.description = "Suppliers from the ERP"
    flow.map["email"] = Field.email(required=True)
    flow.links.append(Link(field="parent_vat", column="parent_id", table="suppliers", match="vat_code"))
    del flow.map["zip"]
"""

from __future__ import annotations

from datetime import date as date_type
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from ruamel.yaml.comments import CommentedMap

from etl_assets.model.flow import FlowModel, LinkSpec, MapField, RunRetention
from etl_assets.model.parameters import FlowParameters, Scalar
from etl_assets.settings.models import ENVIRONMENTS

Link = LinkSpec


class Field:
    """Map fields by type: ``Field.email(required=True)``, ``Field.date("%d/%m/%Y")``,
    ``Field.decimal(scale=2, source="REVENUE")``; any key of a map field as a keyword."""

    @staticmethod
    def of(type: str, **keys: Any) -> MapField:  # noqa: A002 - the declaration's own key
        return MapField(type=type, **keys)

    @classmethod
    def string(cls, **keys: Any) -> MapField:
        return cls.of("String", **keys)

    @classmethod
    def uppercase(cls, **keys: Any) -> MapField:
        return cls.of("UppercaseString", **keys)

    @classmethod
    def titlecase(cls, **keys: Any) -> MapField:
        return cls.of("TitlecaseString", **keys)

    @classmethod
    def integer(cls, **keys: Any) -> MapField:
        return cls.of("Integer", **keys)

    @classmethod
    def decimal(cls, scale: int = 2, **keys: Any) -> MapField:
        return cls.of("Decimal", scale=scale, **keys)

    @classmethod
    def date(cls, format: str = "%d/%m/%Y", **keys: Any) -> MapField:  # noqa: A002
        return cls.of("Date", format=format, **keys)

    @classmethod
    def datetime(cls, format: str = "%d/%m/%Y %H:%M:%S", **keys: Any) -> MapField:  # noqa: A002
        return cls.of("DateTime", format=format, **keys)

    @classmethod
    def email(cls, **keys: Any) -> MapField:
        return cls.of("Email", **keys)

    @classmethod
    def url(cls, **keys: Any) -> MapField:
        return cls.of("URL", **keys)

    @classmethod
    def phone(cls, **keys: Any) -> MapField:
        return cls.of("Phone", **keys)

    @classmethod
    def choice(cls, choices: list[str], **keys: Any) -> MapField:
        return cls.of("Choice", choices=choices, **keys)

    @classmethod
    def method(cls, method: str, options: dict[str, Scalar] | None = None, **keys: Any) -> MapField:
        """``Field.method("rules:pseudonymise", source="EMAIL", options={"salt": "${site.hash_salt}"})``:
        ``options`` are the function's keyword arguments; an ``enc:`` token among them is
        decrypted right before the call, never stored in clear."""
        if options is not None:
            keys["options"] = options
        return cls.of("Method", method=method, **keys)


class Configuration:
    """A flow's runtime settings (the StreamSets SDK's ``pipeline.configuration``), on the
    flow's own keys: ``environment`` (the one environment it is built in, or None),
    ``warn_limit`` (an int > 0, or None: rejected rows never fail), ``retention_days`` or
    ``retention_amount`` (the runs housekeeping keeps; never both)."""

    def __init__(self, model: FlowModel) -> None:
        self._model = model

    @property
    def environment(self) -> str | None:
        return self._model.environment

    @environment.setter
    def environment(self, value: str | None) -> None:
        if value not in (None, *ENVIRONMENTS):
            raise ValueError(f"environment {value!r}: one of {', '.join(ENVIRONMENTS)}, or None")
        self._model.environment = value  # type: ignore[assignment]

    @property
    def warn_limit(self) -> int | None:
        return self._model.warn_limit

    @warn_limit.setter
    def warn_limit(self, value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ValueError(f"warn_limit {value!r}: an int > 0, or None (rejected rows never fail)")
        self._model.warn_limit = value

    @property
    def retention_days(self) -> int | None:
        return self._model.retention.days if self._model.retention else None

    @retention_days.setter
    def retention_days(self, value: int | None) -> None:
        self._retention(value, self.retention_amount, "retention_days", "retention_amount")

    @property
    def retention_amount(self) -> int | None:
        return self._model.retention.amount if self._model.retention else None

    @retention_amount.setter
    def retention_amount(self, value: int | None) -> None:
        self._retention(value, self.retention_days, "retention_amount", "retention_days")

    def _retention(self, value: int | None, other: int | None, name: str, other_name: str) -> None:
        if value is not None and other is not None:
            raise ValueError(f"{name} and {other_name}: never both; set {other_name} to None first")
        days, amount = (value, other) if name == "retention_days" else (other, value)
        self._model.retention = (
            None if days is None and amount is None else RunRetention(days=days, amount=amount)
        )

    def __repr__(self) -> str:
        return (
            f"Configuration(environment={self.environment!r}, warn_limit={self.warn_limit!r}, "
            f"retention_days={self.retention_days!r}, retention_amount={self.retention_amount!r})"
        )


class Flow:
    """One flow of a project: where it is declared, the document as written, and the model
    the SDK edits."""

    _own = ("project", "path", "document", "model", "packaged", "baseline")

    def __init__(
        self, project: Any, path: Path, document: CommentedMap, model: FlowModel, packaged: bool
    ) -> None:
        """``project``: the ``Project`` the flow belongs to (its settings, its other flows)."""
        object.__setattr__(self, "project", project)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "document", document)
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "packaged", packaged)
        # the values as read (parameters resolved): a save keeps the document's ${...} where unchanged
        object.__setattr__(self, "baseline", declared(model))

    def __getattr__(self, name: str) -> Any:
        if name in FlowModel.model_fields:
            return getattr(self.model, name)
        raise AttributeError(f"a flow has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._own:
            object.__setattr__(self, name, value)
        elif name in FlowModel.model_fields:
            setattr(self.model, name, value)
        else:
            raise AttributeError(
                f"a flow has no attribute {name!r} (its keys: {', '.join(FlowModel.model_fields)})"
            )

    def __repr__(self) -> str:
        return (
            f"Flow(name={self.model.name!r}, description={self.model.description!r}, path={str(self.path)!r})"
        )

    @property
    def configuration(self) -> Configuration:
        """The flow's runtime settings: ``flow.configuration.retention_days = 30``."""
        return Configuration(self.model)

    @property
    def cadence(self) -> str:
        """How often a partition comes: ``daily``, ``monthly`` or ``five_minutes``."""
        return self.model.partitions.kind

    def declaration(self) -> dict[str, Any]:
        """The attributes as the file will hold them: what was written or set, and what was
        changed in place since (``flow.links.append(...)``); defaults left unwritten."""
        return declared(self.model)

    def compile(self) -> Any:
        """Everything a run would need, checked without running: a ``CompileResult``
        (``sdk.compiling``)."""
        return self.project.compile_flow(self)

    # -- runtime parameters (model/parameters.py) -----------------------------------------
    def _parameters(self) -> FlowParameters:
        if self.model.parameters is None:
            self.model.parameters = FlowParameters()
        return self.model.parameters

    def set_runtime_value_set(self, parameter_set_name: str, value_set_name: str) -> None:
        """Use the value set ``value_set_name`` of ``parameters/<parameter_set_name>.yaml``."""
        self._parameters().value_sets[parameter_set_name] = value_set_name

    def set_runtime_parameter_value(
        self, parameter_set_name: str, parameter_name: str, value: Scalar
    ) -> None:
        """One value of a parameter set, for this flow only."""
        self._parameters().overrides.setdefault(parameter_set_name, {})[parameter_name] = value

    def set_runtime_local_parameter(self, name: str, value: Scalar) -> None:
        """A parameter of this flow alone, named ``${name}`` in its declaration."""
        self._parameters().local[name] = value

    def history(self) -> list[Any]:
        """The flow's saved declarations, oldest first (``sdk.revisions.Revision``)."""
        return self.project.flow_history(self)

    def diff(self, first: int, second: int) -> str:
        """A unified diff of two revisions of the declaration."""
        return self.project.flow_diff(self, first, second)

    def auto_arrange(self) -> None:
        """The declaration in one canonical layout (``sdk.arrange``), saved by ``update_flow``."""
        self.project.arrange_flow(self)


def declared(model: BaseModel) -> dict[str, Any]:
    """A model as a declaration: the fields set explicitly, and any other that differs from
    its default (an edit in place does not mark a field as set), as plain YAML data."""
    out = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if name not in model.model_fields_set and value == info.get_default(call_default_factory=True):
            continue
        out[name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return declared(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, date_type):
        return value.isoformat()
    return value
