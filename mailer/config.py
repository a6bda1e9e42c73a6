"""Configuration: 12-factor, every setting an environment variable with the ``MAILER_`` prefix.

The defaults are the embedded stack a newcomer gets with no server at all: an SQLite file, a
filesystem Celery broker and the built-in SMTP sink, all under ``MAILER_DATA_DIR``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-only-secret-change-me"


class Settings(BaseSettings):
    """Every knob of the service; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="MAILER_", extra="ignore", populate_by_name=True)

    data_dir: Path = Path("var")
    database_url: str = ""
    # PostgreSQL connections each process keeps open (as many again may open under a burst).
    # Below the web server's concurrency, every request past it paid for a new connection.
    database_pool_size: int = Field(default=10, ge=1, le=200)
    # Threads of a web process that run request handlers (they wait on PostgreSQL and Redis).
    # Few is faster: the GIL hands off between fewer threads (subscribe: 40 threads 265 req/s,
    # 4 threads 343). Scale with more web processes instead.
    web_threads: int = Field(default=4, ge=1, le=200)
    # How long a web process gathers confirmation wake-ups into one task (mailer.web.waker);
    # 0 publishes each at once. The email leaves that much later; the CPU is 0.9 ms a task.
    wake_linger_seconds: float = Field(default=0.02, ge=0, le=1)
    broker_url: str = ""
    redis_url: str = ""
    smtp_url: str = "smtp://127.0.0.1:8025"
    base_url: str = "http://127.0.0.1:8000"

    # Comma-separated, newest first: sign with the first, accept any (key rotation).
    secret_keys: str = DEV_SECRET
    # Stable key for address hashes (suppressions survive erasure of the address).
    hash_key: str = DEV_SECRET

    sender: str = Field(default="النشرة الإخبارية <news@example.com>", alias="MAILER_FROM")
    reply_to: str = "desk@example.com"
    postal_address: str = "١٢ شارع التحرير، القاهرة، مصر"
    site_name: str = "الأخبار العاجلة"
    site_url: str = "https://news.example.com"
    list_id: str = "breaking.news.example.com"
    bounce_domain: str = ""
    feedback_id_sender: str = "newsroom"
    utm_source: str = "newsletter"
    utm_medium: str = "email"

    date_locale: str = "ar_EG"
    arabic_digits: bool = True
    hijri_date: bool = False

    # Sending.
    # Digest workers pause between chunks while an alert has readers queued; only for
    # workers that do not consume the alerts queue themselves (compose's worker-digests).
    digests_yield_to_alerts: bool = False
    alert_batch_size: int = 100
    digest_batch_size: int = 500
    claim_chunk: int = 200
    lease_seconds: float = 150.0
    retry_base_seconds: float = 60.0
    retry_max_seconds: float = 3600.0
    max_attempts: int = 8
    max_age_seconds: float = 2 * 86400.0
    sweep_interval_seconds: float = 10.0
    stall_seconds: float = 60.0
    broker_visibility_timeout: int = 3 * 3600
    broker_poll_interval: float = 0.05

    # Readers (issue "Readers").
    confirm_max_age_days: int = 7
    forget_unconfirmed_days: int = 30
    subscribe_limit_per_ip: str = "20/hour"
    subscribe_limit_per_address: str = "5/hour"

    # Deliverability: DKIM (rsa-sha256 2048; optional ed25519 dual signature).
    dkim_selector: str = ""
    dkim_domain: str = ""
    dkim_key_file: str = ""
    dkim_ed25519_selector: str = ""
    dkim_ed25519_key_file: str = ""
    # Bounces and complaints.
    inbound_host: str = "127.0.0.1"
    inbound_port: int = 8026
    imap_url: str = ""
    soft_bounce_threshold: float = 5.0
    soft_bounce_expiry_days: float = 7.0
    # Sending control: messages per second (0 = unlimited).
    rate_per_second: float = 0.0
    domain_rate_per_second: float = 0.0
    # Optional warm-up of a new sending IP: from this date (ISO 8601), the shared rate starts
    # at warmup_start_rate and grows geometrically to rate_per_second (or 10× start when
    # unlimited) over warmup_days.
    warmup_since: str = ""
    warmup_start_rate: float = 5.0
    warmup_days: float = 30.0
    # Where the shared token buckets live, by import path; empty: Redis when the broker is
    # Redis, else a SQLite file in the data folder.
    rate_store: str = ""
    # An edition pauses itself past this share of permanent failures after min sends.
    error_pause_threshold: float = 0.05
    error_pause_min_sends: int = 500

    # Newsroom: feed hosts allowed despite the SSRF guard (comma-separated host[:port]).
    feed_allow_hosts: str = ""
    schedule_tick_seconds: float = 30.0
    digest_story_limit: int = 10

    # Rate-limit store for the web (subscribe); loaded by import path like the dispatcher.
    limiter: str = "mailer.ratelimit:MemoryLimiter"

    # The queue implementation, loaded by import path so that ``mailer`` never imports Celery.
    dispatcher: str = "workers.dispatcher:CeleryDispatcher"

    web_host: str = "127.0.0.1"
    web_port: int = 8000
    worker_concurrency: int = 2

    @property
    def database(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'mailer.db').resolve()}"

    @property
    def broker(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_is_embedded(self) -> bool:
        return self.broker.startswith("filesystem://")

    @property
    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def sink_dir(self) -> Path:
        return (self.data_dir / "sink").resolve()

    @property
    def keys(self) -> list[str]:
        return [k.strip() for k in self.secret_keys.split(",") if k.strip()]

    @property
    def sender_domain(self) -> str:
        return self.sender.rsplit("@", 1)[-1].strip(" >").lower()

    @property
    def envelope_domain(self) -> str:
        return self.bounce_domain or self.sender_domain

    @property
    def sink_address(self) -> tuple[str, int]:
        parts = urlsplit(self.smtp_url)
        return parts.hostname or "127.0.0.1", parts.port or 8025


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
