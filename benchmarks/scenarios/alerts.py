"""Scenario 7: a breaking alert while a big digest is being sent.

Digest workers (queue ``digests``) and alert workers (``alerts,maintenance`` with beat) run
side by side as the README deploys them. Once the digest flows, an editor triggers an alert;
latency is from that call (render + plan + dispatch included) to the alert's first and last
message at the sink. The digest is cancelled afterwards: only the alert is measured.
"""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from benchmarks import population
from benchmarks.content import add_stories, add_topic
from benchmarks.env import BenchEnv
from benchmarks.report import Row
from benchmarks.scenarios.digest import prepare
from mailer.models import Topic

DIGEST = "bench-alertload"
ALERT_TOPIC = "bench-alert"
NAME = "alert latency during a digest"


def _wait_count(env: BenchEnv, key: int, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while env.sink.key(key).count < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"edition {key}: fewer than {expected} messages after {timeout}s")
        time.sleep(0.02)


def run(
    env: BenchEnv, digest_readers: int, alert_readers: int, concurrency: int, nice: int = 0
) -> list[Row]:
    prepare(env, DIGEST, digest_readers)
    with Session(env.engine) as session:
        add_topic(session, ALERT_TOPIC)
        story_id = add_stories(session, ALERT_TOPIC, count=1)[0]
        breaking = session.scalar(select(Topic.id).where(Topic.slug == "breaking"))
        session.commit()
    assert breaking is not None
    population.subscribe(env.settings, breaking, "instant", alert_readers)
    service = env.service()
    env.start_worker("digests", concurrency, nice=nice)
    env.start_worker("alerts,maintenance", concurrency, beat=True)
    try:
        env.sink.reset()
        digest = service.send_digest(DIGEST, "daily")
        _wait_count(env, digest.edition_id, min(2000, digest.planned // 10), 120)
        clicked = time.time()
        alert = service.trigger_alert(story_id)
        planned = time.time() - clicked
        _wait_count(env, alert.edition_id, alert.planned, 300)
        stats = env.sink.key(alert.edition_id)
        digest_during = env.sink.key(digest.edition_id)
        service.cancel(digest.edition_id)
    finally:
        env.stop_workers()
    first, last = stats.first - clicked, stats.last - clicked
    return [
        Row(
            NAME + (f" (digest workers at nice {nice})" if nice else ""),
            section="alerts",
            readers=alert.planned,
            messages_per_s=alert.planned / last if last > 0 else None,
            figure=(
                f"first {first:.2f} s, last {last:.2f} s after the trigger (planned and queued "
                f"in {planned:.2f} s; digest of {digest.planned:,} running, "
                f"{digest_during.count:,} sent by then)"
            ),
            target="first < 1 s, last < 10 s",
            ok=first < 1 and last < 10,
            values={"first_s": first, "last_s": last, "trigger_s": planned},
        )
    ]
