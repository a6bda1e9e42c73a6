"""What DKIM costs per message: our fast path against ``dkim.sign`` (Deliverability).

A real digest (Renderer + premailer, Arabic stories) grown to about 30 KB is personalised for
one reader, then signed again and again. Prints microseconds per signature:

    python -m benchmarks.bench_dkim [--size 30] [--runs 2000]

Every signature is checked with ``dkim.verify`` once first, so the numbers are for signatures
that a receiver accepts.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mailer import placeholders as ph
from mailer.config import Settings
from mailer.dkim import OVERSIGNED, SIGNED_HEADERS, DkimSigner, dns_txt_value
from mailer.message import MessageSpec, MessageTemplate
from mailer.rendering import Renderer, StoryView

DOMAIN = "news.example.com"
PARAGRAPH = (
    "في مشهد يفضح واقع النظام السوري المتهاوي، وفي لحظة تراجع لم تخطر على بال أحد، كانت "
    "المعارضة المسلحة تقف على أبواب دمشق بينما كانت روسيا تتسارع لحسم الموقف. "
)


def digest_message(kilobytes: int) -> bytes:
    """A reader's copy of a daily digest with enough stories to weigh ``kilobytes``."""
    settings = Settings(secret_keys="bench", hash_key="bench")
    renderer = Renderer(settings)
    start = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
    count, data = 4, b""
    while len(data) < kilobytes * 1000:
        stories = [
            StoryView(
                title=f"عاجل: خبر رقم {i} عن تطورات المشهد في دمشق",
                summary=PARAGRAPH * 2,
                url=f"https://{DOMAIN}/2026/11/25/story-{i}",
                published_at=start + timedelta(minutes=i),
                topic_name="سوريا",
            )
            for i in range(count)
        ]
        r = renderer.render_digest(stories, topic_name="سوريا", cadence="daily", issued_at=start)
        spec = MessageSpec(
            subject=r.subject,
            html=r.html,
            text=r.text,
            sender=f"النشرة الإخبارية <alerts@{DOMAIN}>",
            reply_to="desk@example.com",
            list_id=f"breaking.{DOMAIN}",
            kind="digest",
            feedback_id="7:digest:newsroom",
        )
        data = MessageTemplate.build(spec).personalise(
            {
                ph.TO: "reader@example.org",
                ph.MESSAGE_ID: f"<7.1@{DOMAIN}>",
                ph.DATE: "Wed, 25 Nov 2026 09:30:00 +0200",
                ph.UNSUBSCRIBE_URL: f"https://{DOMAIN}/unsubscribe/TOKEN",
                ph.UNSUBSCRIBE_MAILTO: f"mailto:unsubscribe@{DOMAIN}?subject=TOKEN",
                ph.PREFERENCES_URL: f"https://{DOMAIN}/preferences/TOKEN",
                ph.GREETING: "مرحباً أحمد،",
                ph.EMAIL: "reader@example.org",
            }
        )
        count += 1
    return data


def per_call(run: Callable[[], object], runs: int) -> float:
    """Median microseconds of ``runs`` calls, in 10 timed rounds (robust to a busy machine)."""
    rounds = []
    per_round = max(1, runs // 10)
    run()  # warm up
    for _ in range(10):
        start = time.perf_counter()
        for _ in range(per_round):
            run()
        rounds.append((time.perf_counter() - start) / per_round)
    return statistics.median(rounds) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=30, help="message size in KB")
    parser.add_argument("--runs", type=int, default=2000, help="signatures per fast measurement")
    args = parser.parse_args()

    message = digest_message(args.size)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ed_key = Ed25519PrivateKey.generate()
    ed_pem = ed_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    records = {f"s1._domainkey.{DOMAIN}.".encode(): dns_txt_value(public).encode()}

    rsa_only = DkimSigner(domain=DOMAIN, selector="s1", private_key_pem=pem)
    dual = DkimSigner(domain=DOMAIN, selector="s1", private_key_pem=pem, ed25519=("s2", ed_pem))
    assert dkim.verify(rsa_only.sign(message), dnsfunc=lambda n, timeout=5: records.get(n))
    assert dkim.verify(dual.sign(message), dnsfunc=lambda n, timeout=5: records.get(n))
    include = [h for h in SIGNED_HEADERS if h.lower() + b":" in message.lower()] + list(OVERSIGNED)

    def reference() -> bytes:
        signature: bytes = dkim.sign(
            message,
            b"s1",
            DOMAIN.encode(),
            pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
        )
        return signature

    assert dkim.verify(reference() + message, dnsfunc=lambda n, timeout=5: records.get(n))

    fast = per_call(lambda: rsa_only.sign(message), args.runs)
    both = per_call(lambda: dual.sign(message), args.runs)
    slow = per_call(reference, max(20, args.runs // 50))
    print(f"message: {len(message) / 1000:.1f} KB digest, 2048-bit RSA, relaxed/relaxed")
    print(f"{'mailer.dkim (OpenSSL RSA)':<34} {fast:>9.0f} µs/signature")
    print(f"{'mailer.dkim (RSA + Ed25519)':<34} {both:>9.0f} µs/message")
    print(f"{'dkim.sign (dkimpy, pure Python)':<34} {slow:>9.0f} µs/signature")
    print(f"speed-up: {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
