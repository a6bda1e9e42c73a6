"""The real send path signs every reader's copy: alerts and digests verify with dkimpy."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from pathlib import Path

import dkim as dkimpy
import pytest

from mailer.dkim import generate_keys
from mailer.transport import MemoryTransport
from tests.support.world import World, make_world, migrated_template

__all__ = ["migrated_template"]

REQUIRED = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
}


@pytest.fixture
def world(tmp_path: Path, migrated_template: Path) -> Iterator[World]:
    keys = generate_keys("news2026", "example.com", tmp_path / "dkim")
    yield from make_world(
        tmp_path,
        migrated_template,
        dkim_selector="news2026",
        dkim_domain="example.com",
        dkim_key_file=str(keys.keys[0].path),
    )


def test_alerts_and_digests_sent_by_the_worker_verify(world: World, tmp_path: Path) -> None:
    key = next((tmp_path / "dkim").glob("news2026.pem"))
    from cryptography.hazmat.primitives import serialization

    from mailer.dkim import dns_txt_value

    private = serialization.load_pem_private_key(key.read_bytes(), None)
    public = private.public_key().public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    records = {b"news2026._domainkey.example.com.": dns_txt_value(public).encode()}

    world.add_readers(5)
    world.add_readers(5, topics=("syria",), cadence="daily", start=6)
    transport = MemoryTransport()
    sender = world.sender(transport)
    world.service.trigger_alert(world.add_story())
    world.drain(sender)
    world.service.send_digest("syria", "daily")
    world.drain(sender)
    assert len(transport.sent) == 10
    for _, _, data in transport.sent:
        assert dkimpy.verify(data, dnsfunc=lambda name, timeout=5: records.get(name))
        signature = email.message_from_bytes(data, policy=email.policy.default)["DKIM-Signature"]
        signed = set(
            re.search(r"h=([^;]+)", str(signature).replace(" ", ""))
            .group(1)  # type: ignore[union-attr]
            .lower()
            .split(":")
        )
        assert signed >= REQUIRED
        tampered = data.replace(b"Subject:", b"Subject: X", 1)
        assert not dkimpy.verify(tampered, dnsfunc=lambda name, timeout=5: records.get(name))
