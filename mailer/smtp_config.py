"""``MAILER_SMTP_URL`` parsed into :class:`SmtpConfig`: where and how to send."""

from __future__ import annotations

from dataclasses import dataclass, fields
from urllib.parse import parse_qsl, unquote, urlsplit


def _flag(key: str, value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"SMTP URL option {key}= must be true or false, not {value!r}")


def _seconds(key: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise ValueError(f"SMTP URL option {key}= must be a positive number of seconds")
    return seconds


@dataclass(frozen=True, repr=False)
class SmtpConfig:
    """Where and how to send; see :meth:`from_url`. The password never appears in repr()."""

    host: str
    port: int
    username: str | None
    password: str | None
    starttls: bool
    ssl: bool
    connect_timeout: float = 10.0
    message_timeout: float = 60.0
    local_hostname: str | None = None
    verify_tls: bool = True
    pipelining: bool = True
    chunking: bool = True

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """Parse ``smtp[s]://[user[:pass]@]host[:port][?option=value&...]``.

        Options: ``starttls``, ``connect_timeout`` and ``timeout`` (the per-message deadline,
        also ``message_timeout``) in seconds, ``local_hostname`` (the EHLO name) and
        ``verify`` (TLS certificate checks, default true), ``pipelining`` (RFC 2920 when the
        server offers it, default true), ``chunking`` (RFC 3030 BDAT, pipelined, when the
        server offers both, default true). ``smtps`` is implicit TLS on port
        465; ``smtp`` defaults to port 25. Error messages never echo the URL (it may hold a
        password).
        """
        parts = urlsplit(url.strip())
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("SMTP URL must start with smtp:// or smtps://")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("SMTP URL has an invalid port (expected 1-65535)") from None
        if not parts.hostname:
            raise ValueError("SMTP URL has no host (expected smtp://host:port)")
        if parts.path not in ("", "/") or parts.fragment or port == 0:
            raise ValueError("SMTP URL must be smtp[s]://[user:pass@]host[:port][?options]")
        options: dict[str, object] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "starttls":
                options["starttls"] = _flag(key, value)
            elif key == "verify":
                options["verify_tls"] = _flag(key, value)
            elif key in ("pipelining", "chunking"):
                options[key] = _flag(key, value)
            elif key == "connect_timeout":
                options["connect_timeout"] = _seconds(key, value)
            elif key in ("timeout", "message_timeout"):
                options["message_timeout"] = _seconds(key, value)
            elif key == "local_hostname" and value:
                options["local_hostname"] = value
            else:
                raise ValueError(
                    f"unknown SMTP URL option {key!r} (known: starttls, connect_timeout, "
                    "timeout, local_hostname, verify, pipelining, chunking)"
                )
        implicit_tls = parts.scheme == "smtps"
        if implicit_tls and options.get("starttls"):
            raise ValueError("smtps:// is already TLS: starttls=true makes no sense with it")
        return cls(
            host=parts.hostname,
            port=port or (465 if implicit_tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            starttls=bool(options.pop("starttls", False)),
            ssl=implicit_tls,
            **options,  # type: ignore[arg-type]
        )

    def __repr__(self) -> str:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.password:
            values["password"] = "***"
        return f"SmtpConfig({', '.join(f'{k}={v!r}' for k, v in values.items())})"
