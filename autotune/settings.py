"""Settings read from the environment (prefix AUTOTUNE_) with command-line overrides."""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STORAGE = "sqlite:///autotune.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTOTUNE_")

    storage: str = DEFAULT_STORAGE
    log_dir: str = "autotune_logs"
    # Shared (PostgreSQL) studies: a worker silent for grace_period_s is taken for dead and its
    # trial is retried, at most max_retries times per configuration.
    heartbeat_interval_s: int = 10
    grace_period_s: int = 30
    max_retries: int = 2
    # The trust boundary (docs/distributed.md): the sha256 a study's stored space must have
    # before `autotune worker` or `confirm` runs its engine command (or pass --space FILE).
    space_sha256: str | None = None

    @field_validator("storage")
    @classmethod
    def _url(cls, url: str) -> str:
        if "://" not in url:
            raise ValueError(
                f"storage {url!r} is not a database URL (e.g. sqlite:///autotune.db or "
                "postgresql+psycopg://user@host/db)"
            )
        return url


def resolve_storage(cli_value: str | None) -> str:
    """The storage URL from --storage, else $AUTOTUNE_STORAGE, else the default (validated)."""
    if cli_value is not None:
        return Settings(storage=cli_value).storage
    return Settings().storage
