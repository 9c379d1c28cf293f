"""What the deployment tests share: the repository root and every environment variable the settings read."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]


def settings_classes() -> list[type[BaseSettings]]:
    from services.callback.settings import CallbackSettings
    from services.connector.settings import ConnectorSettings
    from services.intake.settings import IntakeSettings
    from services.router.settings import RouterSettings
    from shared.auth import AuthSettings
    from shared.http_limits import HttpServerSettings
    from shared.settings import CommonSettings, PromiseSettings

    return [
        CommonSettings,
        PromiseSettings,
        AuthSettings,
        HttpServerSettings,
        IntakeSettings,
        RouterSettings,
        CallbackSettings,
        ConnectorSettings,
    ]


def known_env_names() -> set[str]:
    """Every variable some settings class reads: prefix + field name, and each explicit alias."""
    names: set[str] = set()
    for cls in settings_classes():
        prefix = cls.model_config.get("env_prefix", "")
        for field_name, field in cls.model_fields.items():
            alias = field.validation_alias
            if alias is None:
                names.add(f"{prefix}{field_name}".upper())
                continue
            # With an alias pydantic-settings reads the alias names only (the prefix is not applied).
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
            names.update(c.upper() for c in choices if isinstance(c, str) and c.upper().startswith("SWITCHBOARD_"))
    return names


SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "SIGNING_KEY", "DATABASE_URL", "AUTH", "ACCOUNT_SID")


def looks_secret(name: str) -> bool:
    return any(word in name.upper() for word in SECRET_WORDS)
