"""Configuration, read once from the environment (and an optional `.env` file)."""

from __future__ import annotations

from functools import cached_property
import hashlib
import hmac
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Literal

from pydantic import Field, PostgresDsn, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from yarl import URL


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    database_url: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/commons_users"),
        description="PostgreSQL connection URL (libpq form).",
    )
    database_listen_url: SecretStr | None = Field(
        None,
        description="A session of its own on the primary, never through a transaction-mode pooler: where each API "
        "replica's live update hub LISTENs, and where `commons-users migrate` runs (its lock is held by the session). "
        "Unset: DATABASE_URL.",
    )
    database_replica_urls: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated URLs of streaming read replicas of the primary, from which the API reads "
        "what may be slightly stale; empty: every read goes to the primary.",
    )
    database_replica_max_lag_seconds: float = Field(
        5, gt=0, description="A read replica whose replay lags by more than this is skipped until it catches up."
    )
    database_replica_check_seconds: float = Field(
        1,
        gt=0,
        description="How often the API checks each read replica's reach and replay position, in the background; "
        "a check must answer within this too.",
    )
    database_transaction_pooler: bool = Field(
        False,
        description="DATABASE_URL and the replicas' URLs lead through a transaction-mode pooler (PgBouncer): no "
        "prepared statement outlives a transaction (asyncpg's statement cache is off) and a statement that "
        "stands alone runs in a transaction of its own. DATABASE_LISTEN_URL must still reach the primary directly.",
    )
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated Kafka bootstrap servers.")
    jwt_secret: SecretStr = Field(
        description="HS256 key that signs the JWTs posted to /api/sessions; also keys the "
        "signatures of pagination cursors.",
        min_length=32,
    )
    jwt_public_key: SecretStr | None = Field(
        None,
        description="PEM public key. When set, session JWTs must be RS256-signed by the "
        "matching private key and HS256 tokens are refused.",
    )
    jwt_issuer: str | None = Field(None, description="When set, the JWT `iss` claim must equal it.")
    jwt_audience: str | None = Field(None, description="When set, the JWT `aud` claim must contain it.")
    session_ttl_seconds: int = Field(8 * 3600, ge=60, description="Lifetime of a session.")
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins (scheme://host[:port]) allowed to POST/DELETE with a "
        "cookie session, besides the API's own origin.",
    )
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated addresses and CIDR networks of the proxies in front of the API (an ingress). "
        "Only from these is the client's address, scheme and host taken from PROXY_HEADERS; empty: trust nobody.",
    )
    proxy_headers: Literal["x-forwarded", "forwarded"] = Field(
        "x-forwarded",
        description="The header the trusted proxies write: `x-forwarded` (X-Forwarded-For, -Proto, -Host) or "
        "`forwarded` (RFC 7239). The other kind is ignored, since a proxy passes it on unchanged.",
    )
    kafka_resource_topic: str = Field("commons.resource-events", description="Topic of resource events.")
    kafka_user_topic: str = Field("commons.user-events", description="Topic of user events.")
    kafka_consumer_group: str = Field("commons-users", description="Consumer group of the event consumer.")
    kafka_create_topics: bool = Field(
        False, description="Create missing topics (and their .dlq topics) at start-up; production provisions them."
    )
    kafka_topic_partitions: int = Field(6, ge=1, description="Partitions of topics created at start-up.")
    kafka_topic_replication_factor: int = Field(1, ge=1, description="Replication of topics created at start-up.")
    consumer_session_timeout_ms: int = Field(
        10_000, ge=1000, description="Consumer-group session timeout: how soon a silent member loses its partitions."
    )
    consumer_heartbeat_interval_ms: int = Field(3000, ge=100, description="Consumer-group heartbeat interval.")
    consumer_max_batch: int = Field(
        2500,
        ge=1,
        description="Most records of a partition the consumer applies in one transaction. Batches are as large as "
        "the backlog: records that arrive while a partition's batch is applied make its next one.",
    )
    consumer_concurrency: int = Field(
        6,
        ge=1,
        description="Batches (of different partitions) the consumer applies at once, each in a transaction and on "
        "a database connection of its own: keep it below DB_POOL_MAX_SIZE.",
    )
    consumer_fetch_max_wait_ms: int = Field(
        50,
        ge=0,
        description="Longest time the broker holds a fetch that finds no new record. Kafka answers one as soon as "
        "a record arrives, whatever this says; Tansu looks for records now and then within it, so there it "
        "bounds the delay of an event on an idle consumer. An idle consumer makes a fetch this often.",
    )
    consumer_max_consecutive_failures: int = Field(
        100, ge=1, description="Consecutive dead-lettered messages that stop the consumer instead."
    )
    consumer_dead_letter_timeout_seconds: float = Field(
        30, gt=0, description="How long a dead letter may take to be written before the consumer stops instead."
    )
    consumer_offset_beyond_end: Literal["fail", "replay"] = Field(
        "fail",
        description="When a stored offset lies beyond the end of its partition (a wiped or recreated topic): "
        "`fail` stops the consumer; `replay` reads the partition again from its beginning.",
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Largest request body accepted (413 above).")
    db_pool_min_size: int = Field(2, ge=0)
    db_pool_max_size: int = Field(10, ge=1)
    db_timeout_seconds: float = Field(
        10,
        gt=0,
        description="Longest wait for a database connection, and in the API for a statement: past it the API "
        "answers 503 and the consumer reads the batch again.",
    )
    log_level: str = Field("INFO", description="Python logging level name.")
    log_format: Literal["json", "console"] = Field("json", description="JSON lines, or readable lines.")
    shutdown_grace_seconds: float = Field(
        20, ge=0, description="After SIGTERM, how long in-flight requests may take to finish."
    )
    readiness_timeout_seconds: float = Field(2, gt=0, description="How long /readyz waits for the database.")
    consumer_health_port: int = Field(8081, ge=0, le=65535, description="Port of the consumer's probes and metrics.")
    consumer_liveness_seconds: float = Field(
        60, gt=0, description="The consumer is live while its loop turned within this many seconds."
    )
    consumer_ready_max_lag: int = Field(
        1000, ge=0, description="The consumer is ready while no partition lags by more records than this."
    )
    rate_limit_per_hour: int = Field(
        2500, ge=0, description="Requests a user (on POST /api/sessions: a client address) may make an hour; 0: off."
    )
    redis_url: SecretStr | None = Field(
        None, description="Redis where every API replica counts requests; unset: each process counts on its own."
    )
    redis_timeout_seconds: float = Field(
        0.1, gt=0, description="Longest wait for Redis; a request it fails or delays is served uncounted."
    )
    rate_limit_key_prefix: str = Field("commons-users:rate-limit:", description="Prefix of the counters' Redis keys.")
    update_stream_retention_seconds: float = Field(
        24 * 3600,
        gt=0,
        description="How long the changes behind the live update stream are kept (every API replica and consumer "
        "prunes them): a client that reconnects within it gets what it missed; one away longer is told to reload.",
    )
    update_stream_keepalive_seconds: float = Field(
        15, gt=0, description="How often an idle update stream sends a comment line, so that proxies keep it open."
    )
    update_stream_max_pending_events: int = Field(
        100, ge=1, description="Events an update stream may hold for a client that reads slowly; one more closes it."
    )
    update_stream_write_timeout_seconds: float = Field(
        10, gt=0, description="How long a write to an update stream may wait for the client to read before it closes."
    )
    update_stream_max_per_user: int = Field(
        10,
        ge=1,
        description="Live update streams a user may hold at once, on all replicas together when REDIS_URL is set "
        "(else on each); one more is refused 429.",
    )
    update_stream_max_streams: int = Field(
        10_000, ge=1, description="Live update streams an API replica holds at most; one more is refused 503."
    )
    update_stream_listen_check_seconds: float = Field(
        5,
        gt=0,
        description="An API replica's listening connection is checked by a read this often when idle, and every "
        "read on it must answer within this: a connection lost silently is noticed within twice this. Also how "
        "long a reconnection whose Last-Event-ID is ahead of the replica waits for it to catch up.",
    )
    written_positions_key_prefix: str = Field(
        "commons-users:written:",
        description="Prefix of the Redis keys that hold each user's last write position, for read-your-writes on "
        "the read replicas.",
    )
    update_stream_key_prefix: str = Field(
        "commons-users:update-streams:", description="Prefix of the Redis keys that count each user's streams."
    )

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return [ip_network(item.strip(), strict=False) for item in value.split(",") if item.strip()]
            except ValueError as exc:
                raise ValueError(f"not an address or CIDR network: {exc}") from None
        return value

    @field_validator("database_replica_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [url.strip() for url in value.split(",") if url.strip()]
        return value

    @field_validator("database_url", "database_listen_url")
    @classmethod
    def _valid_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            PostgresDsn(value.get_secret_value())
        return value

    @field_validator("database_replica_urls")
    @classmethod
    def _valid_dsns(cls, value: list[SecretStr]) -> list[SecretStr]:
        for url in value:
            PostgresDsn(url.get_secret_value())
        return value

    @cached_property
    def cursor_key(self) -> bytes:
        """A key for cursor signatures, derived so that it never equals the JWT key itself."""
        return hmac.digest(self.jwt_secret.get_secret_value().encode(), b"commons-users cursor", hashlib.sha256)

    @property
    def database_url_for_logs(self) -> str:
        return redact_dsn(self.database_url.get_secret_value())

    @property
    def direct_dsn(self) -> str:
        return (self.database_listen_url or self.database_url).get_secret_value()


def redact_dsn(dsn: str) -> str:
    """The URL with its password hidden, for log lines."""
    url = URL(dsn)
    return str(url.with_password("***")) if url.password else str(url)
