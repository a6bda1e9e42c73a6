"""The embedded broker never hands a consumer a half-written message."""

from __future__ import annotations

from pathlib import Path

from kombu import Connection

from workers import fs_transport


def connection(folder: Path) -> Connection:
    fs_transport.install()
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(folder),
    }
    return Connection("filesystem://", transport_options=options)


def test_messages_appear_whole_and_partial_files_are_never_consumed(tmp_path: Path) -> None:
    with connection(tmp_path) as conn:
        queue = conn.SimpleQueue("alerts")
        # What a publisher killed mid-write leaves behind: a partial file and a truncated one.
        (tmp_path / ".partial-deadbeef").write_bytes(b'{"body": "trunc')
        (tmp_path / "1_00000000-0000-0000-0000-000000000000.alerts.msg").write_bytes(b"")
        queue.put({"edition": 7})
        assert not list(tmp_path.glob("*.alerts.msg.tmp"))
        message = queue.get(timeout=2)
        assert message.payload == {"edition": 7}
        message.ack()
        queue.close()
    assert (tmp_path / ".partial-deadbeef").exists()  # never picked up as a message
