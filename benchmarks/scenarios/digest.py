"""Scenario 2 (and 6 for 100k): a digest end to end, unsigned and DKIM-signed.

"End to end" is the operator's command to the last recorded delivery: render and plan
(``Service.send_digest``, in this process, as the CLI does it), then real Celery workers claim,
personalise, (sign,) send to the sink and record every result.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.orm import Session

from benchmarks import population
from benchmarks.content import add_stories, add_topic
from benchmarks.env import REPO, BenchEnv
from benchmarks.measure import Sent, send_on_fresh_workers
from benchmarks.report import Row

UNSIGNED = "digest end to end"
SIGNED = "digest end to end, DKIM-signed"


def prepare(env: BenchEnv, slug: str, readers: int, cadence: str = "daily") -> None:
    """A topic with ten new stories and its first ``readers`` readers subscribed."""
    with Session(env.engine) as session:
        topic_id = add_topic(session, slug)
        add_stories(session, slug)
        session.commit()
    population.subscribe(env.settings, topic_id, cadence, readers)


def row(name: str, sent: Sent, figure: str = "") -> Row:
    return Row(
        name,
        readers=sent.messages,
        messages_per_s=sent.rate,
        cpu_ms_per_message=sent.cpu_ms_per_message,
        peak_rss_mib=sent.peak_rss_mib,
        figure=figure or f"{sent.seconds:.1f} s, {sent.duplicates} duplicates; {sent.others}",
        target="RSS < 150 MiB",
        ok=sent.peak_rss_mib < 150 and sent.duplicates == 0,
        values={"seconds": sent.seconds},
    )


def send_digest(env: BenchEnv, slug: str, concurrency: int, extra: dict[str, str] | None) -> Sent:
    service = env.service()

    def start() -> tuple[int, int]:
        started = service.send_digest(slug, "daily")
        return started.edition_id, started.planned

    return send_on_fresh_workers(env, start, concurrency=concurrency, extra=extra)


def run_unsigned(env: BenchEnv, readers: int, concurrency: int) -> list[Row]:
    prepare(env, "bench-digest", readers)
    return [row(UNSIGNED, send_digest(env, "bench-digest", concurrency, None))]


def signer_wired() -> str:
    """Why the DKIM row cannot run yet, or "" when it can."""
    if importlib.util.find_spec("mailer.dkim") is None:
        return "signer not written: no mailer.dkim"
    sources = (REPO / "mailer" / "sending.py", REPO / "workers" / "runtime.py")
    if not any("dkim" in path.read_text(encoding="utf-8").lower() for path in sources):
        return "signer not wired"
    return ""


def write_key(folder: Path) -> Path:
    """A 2048-bit RSA key in PEM (PKCS#1), as DESIGN §4 asks for."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = folder / "bench.dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return path


def run_signed(env: BenchEnv, readers: int, concurrency: int) -> list[Row]:
    why = signer_wired()
    if why:
        return [Row.na(SIGNED, "throughput", why)]
    prepare(env, "bench-signed", readers)
    extra = {
        "dkim_selector": "bench",
        "dkim_domain": env.settings.sender_domain,
        "dkim_key_file": str(write_key(env.tmp)),
    }
    sent = send_digest(env, "bench-signed", concurrency, extra)
    if sent.signed < sent.messages:
        return [Row.na(SIGNED, "throughput", f"signer not wired: {sent.signed} signed")]
    return [row(SIGNED, sent)]
