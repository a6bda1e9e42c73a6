"""DKIM: every kind of message, as a reader gets it, verifies with dkimpy against the published key.

The keys come from :func:`generate_keys` and the "DNS" is a stub that answers with the TXT
records it printed (the quoted 255-byte strings joined back, as a resolver does).
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import hashlib
import re
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import dkim as dkimpy
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from dkim.canonicalization import Relaxed
from hypothesis import given
from hypothesis import strategies as st

from mailer import placeholders as ph
from mailer.config import Settings
from mailer.dkim import (
    OVERSIGNED,
    SIGNED_HEADERS,
    BodyHasher,
    DkimSigner,
    KeyFiles,
    canonical_body,
    canonical_headers,
    dns_txt_record,
    generate_keys,
    header_fields,
    signed_header_data,
)
from mailer.message import MessageSpec, MessageTemplate
from mailer.rendering import Renderer, StoryView

M = ph.marker
DOMAIN = "news.example.com"
SUBJECT = "عاجل: روسيا تخطط لهروب بشار الأسد بعد انهيار نظامه في دمشق"
DnsFunc = Callable[..., bytes | None]


def txt_value(record: str) -> str:
    """What a resolver returns for a zone-file TXT line: its quoted strings, concatenated."""
    strings = re.findall(r'"([^"]*)"', record)
    assert strings and all(len(s) <= 255 for s in strings), record
    return "".join(strings)


def stub_dns(keys: KeyFiles) -> DnsFunc:
    records = {
        f"{key.name}.".encode(): txt_value(key.record).encode() for key in keys.keys
    }  # dkimpy asks for the absolute name

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return lookup


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyFiles:
    return generate_keys("news2026", DOMAIN, tmp_path_factory.mktemp("dkim"), ed25519=True)


@pytest.fixture(scope="module")
def dns(keys: KeyFiles) -> DnsFunc:
    return stub_dns(keys)


@pytest.fixture(scope="module")
def signer(keys: KeyFiles) -> DkimSigner:
    rsa, ed = keys.keys
    return DkimSigner(
        domain=DOMAIN,
        selector=rsa.selector,
        private_key_pem=rsa.path.read_bytes(),
        ed25519=(ed.selector, ed.path.read_bytes()),
    )


# -- the messages a reader gets ---------------------------------------------------------


@cache
def rendered(kind: str) -> tuple[str, str, str]:
    """(subject, html, text) of each kind, with the per-reader markers still in."""
    renderer = Renderer(Settings(secret_keys="test", hash_key="test"))
    story = StoryView(
        title=SUBJECT,
        summary="في مشهد يفضح واقع النظام السوري المتهاوي، كانت المعارضة على أبواب دمشق.",
        url="https://news.example.com/2024/12/08/assad",
        published_at=datetime(2026, 11, 25, 7, 30, tzinfo=UTC),
        is_breaking=True,
        topic_name="سوريا",
    )
    if kind == "alert":
        r = renderer.render_alert(story, topic_name="سوريا")
        return r.subject, r.html, r.text
    if kind == "digest":
        r = renderer.render_digest(
            [story, story], topic_name="سوريا", cadence="daily", issued_at=story.published_at
        )
        return r.subject, r.html, r.text
    # Transactional kinds: the same builder, their own words.
    title = {"confirmation": "أكّد اشتراكك في النشرة", "welcome": "مرحباً بك في النشرة"}[kind]
    html = (
        f'<html lang="ar" dir="rtl"><body dir="rtl"><p>{M(ph.GREETING)}</p>'
        f"<p>{title}:  اضغط\tالزر أدناه.</p>"  # a tab and a double space, as editors type
        f'<a href="{M(ph.PREFERENCES_URL)}">تأكيد</a> · '
        f'<a href="{M(ph.UNSUBSCRIBE_URL)}">إلغاء</a><p>{M(ph.EMAIL)}</p></body></html>'
    )
    text = f"{M(ph.GREETING)}\n\n{title}   \n{M(ph.PREFERENCES_URL)}\n{M(ph.UNSUBSCRIBE_URL)}\n"
    return title, html, text


KINDS = ["alert", "digest", "confirmation", "welcome"]


@cache
def template(kind: str, eightbit: bool) -> MessageTemplate:
    subject, html, text = rendered(kind)
    spec = MessageSpec(
        subject=subject,
        html=html,
        text=text,
        sender=f"النشرة الإخبارية <alerts@{DOMAIN}>",
        reply_to="التحرير <desk@example.com>",
        list_id=f"breaking.{DOMAIN}",
        kind=kind,
        feedback_id=f"7:{kind}:newsroom",
    )
    return MessageTemplate.build(spec, eightbit=eightbit)


def values(tag: str = "a", to: str | None = None) -> dict[str, str]:
    address = to or f"reader-{tag}@example.org"
    return {
        ph.TO: address,
        ph.MESSAGE_ID: f"<7.{tag}@{DOMAIN}>",
        ph.DATE: "Wed, 25 Nov 2026 09:30:00 +0200",
        ph.UNSUBSCRIBE_URL: f"https://{DOMAIN}/unsubscribe/TOKEN{tag}",
        ph.UNSUBSCRIBE_MAILTO: f"mailto:unsubscribe@{DOMAIN}?subject=TOKEN{tag}",
        ph.GREETING: f"مرحباً أحمد {tag}،",
        ph.EMAIL: address,
        ph.PREFERENCES_URL: f"https://{DOMAIN}/preferences/TOKEN{tag}",
    }


def signature_tags(signed: bytes, index: int = 0) -> dict[bytes, bytes]:
    headers, _ = dkimpy.rfc822_parse(signed)
    sigs = [value for name, value in headers if name.lower() == b"dkim-signature"]
    tags: dict[bytes, bytes] = dkimpy.util.parse_tag_value(sigs[index])
    return tags


def h_tag(signed: bytes, index: int = 0) -> list[bytes]:
    return [n.lower() for n in re.split(rb"\s*:\s*", signature_tags(signed, index)[b"h"])]


# -- verification -------------------------------------------------------------------------


@pytest.mark.parametrize("eightbit", [True, False], ids=["8bit", "quoted-printable"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_verifies_against_the_published_key(
    kind: str, eightbit: bool, signer: DkimSigner, dns: DnsFunc
) -> None:
    message = template(kind, eightbit).personalise(values())
    signed = signer.sign(message)

    assert signed.endswith(message)  # headers added on top, nothing else changed
    assert dkimpy.verify(signed, dnsfunc=dns)
    tags = signature_tags(signed)
    assert tags[b"a"] == b"rsa-sha256" and tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"d"] == DOMAIN.encode() and tags[b"s"] == b"news2026"
    assert b"l" not in tags  # no body length limit: nothing can be appended

    h = h_tag(signed)
    for name in OVERSIGNED:  # the list, oversigned: a second copy breaks the signature
        assert h.count(name) == 2, (name, h)
    assert set(h) == set(SIGNED_HEADERS)  # every kind has them all
    for name in set(SIGNED_HEADERS) - set(OVERSIGNED):
        assert h.count(name) == 1, (name, h)

    parsed = email.message_from_bytes(signed, policy=email.policy.default)
    unsigned = email.message_from_bytes(message, policy=email.policy.default)
    assert parsed.get_all("To") == [values()[ph.TO]]
    assert parsed["Subject"] == unsigned["Subject"]
    assert "".join(parsed["Subject"].split()) == "".join(rendered(kind)[0].split())
    assert len(parsed.get_all("DKIM-Signature") or []) == 2
    text = parsed.get_body(("plain",))
    assert text is not None and "مرحباً أحمد a" in text.get_content()


@pytest.mark.parametrize("eightbit", [True, False], ids=["8bit", "quoted-printable"])
def test_each_reader_copy_is_signed_for_that_reader(
    eightbit: bool, signer: DkimSigner, dns: DnsFunc
) -> None:
    first = signer.sign(template("digest", eightbit).personalise(values("a")))
    second = signer.sign(template("digest", eightbit).personalise(values("b")))
    assert dkimpy.verify(first, dnsfunc=dns) and dkimpy.verify(second, dnsfunc=dns)
    assert signature_tags(first)[b"bh"] != signature_tags(second)[b"bh"]
    # Reader b's signature on reader a's message: the To and body do not match.
    split = second.index(b"From:")
    assert not dkimpy.verify(second[:split] + first[first.index(b"From:") :], dnsfunc=dns)


def tamper_subject(signed: bytes) -> bytes:
    # The subject is RFC 2047 encoded; change one letter of its base64.
    m = re.search(rb"\r\nSubject: =\?utf-8\?b\?(.)", signed)
    assert m is not None
    pos = m.start(1)
    return signed[:pos] + (b"A" if signed[pos : pos + 1] != b"A" else b"B") + signed[pos + 1 :]


def qp(text: str) -> bytes:
    return binascii.b2a_qp(text.encode())


def tamper_body(signed: bytes) -> bytes:
    """Another name in the greeting, in 8bit or in quoted-printable."""
    head = signed.index(b"\r\n\r\n")
    for old, new in (("أحمد".encode(), "محمد".encode()), (qp("أحمد"), qp("محمد"))):
        if old in signed[head:]:
            return signed[:head] + signed[head:].replace(old, new, 1)
    raise AssertionError("greeting not found in the body")


def add_on_top(name: bytes, value: bytes) -> Callable[[bytes], bytes]:
    """A second copy above the signed one: verifiers check the bottom-most copy of a header,
    mail clients may show the top one; only oversigning catches this."""

    def change(signed: bytes) -> bytes:
        return name + b": " + value + b"\r\n" + signed

    return change


TAMPERING = {
    "subject": tamper_subject,
    "body byte": tamper_body,
    "recipient": lambda s: s.replace(b"To: reader-a@example.org", b"To: reader-x@example.org"),
    "a second From": add_on_top(b"From", b"attacker@evil.example"),
    "a second List-Unsubscribe": add_on_top(b"List-Unsubscribe", b"<https://evil.example/u>"),
    "a second Subject": add_on_top(b"Subject", b"win a prize"),
}


@pytest.mark.parametrize("eightbit", [True, False], ids=["8bit", "quoted-printable"])
@pytest.mark.parametrize("change", TAMPERING.values(), ids=TAMPERING.keys())
def test_a_message_changed_after_signing_fails(
    change: Callable[[bytes], bytes], eightbit: bool, signer: DkimSigner, dns: DnsFunc
) -> None:
    signed = signer.sign(template("alert", eightbit).personalise(values()))
    changed = change(signed)
    assert changed != signed
    assert not dkimpy.verify(changed, dnsfunc=dns)


def test_a_relay_refolding_headers_or_adding_its_own_keeps_it_valid(
    signer: DkimSigner, dns: DnsFunc
) -> None:
    """relaxed/relaxed: whitespace changes and unsigned headers (Received) are fine."""
    signed = signer.sign(template("alert", True).personalise(values()))
    relayed = b"Received: from relay.example by mx.example; Wed, 25 Nov 2026\r\n" + signed
    relayed = relayed.replace(b"\r\nMIME-Version: 1.0", b"\r\nMIME-Version:   1.0 ")
    assert dkimpy.verify(relayed, dnsfunc=dns)


def test_a_non_ascii_recipient_is_signed_too(signer: DkimSigner, dns: DnsFunc) -> None:
    message = template("welcome", True).personalise(values(to="قارئ@example.org"))
    signed = signer.sign(message)
    assert dkimpy.verify(signed, dnsfunc=dns)
    parsed = email.message_from_bytes(signed, policy=email.policy.default)
    assert parsed.get_all("To") == ["قارئ@example.org"]


def test_bare_line_feeds_are_signed_as_they_will_be_sent(signer: DkimSigner, dns: DnsFunc) -> None:
    message = template("confirmation", True).personalise(values()).replace(b"\r\n", b"\n")
    signed = signer.sign(message)
    assert b"\n" not in signed.replace(b"\r\n", b"")  # CRLF throughout, as SMTP sends it
    assert dkimpy.verify(signed, dnsfunc=dns)


def test_a_message_without_from_is_refused(signer: DkimSigner) -> None:
    with pytest.raises(ValueError, match="without a From"):
        signer.sign(b"To: a@example.org\r\nSubject: x\r\n\r\nbody\r\n")


# -- Ed25519 (RFC 8463) -----------------------------------------------------------------


class _BadSignature(Exception):
    pass


class _VerifyKey:
    """The part of PyNaCl's ``VerifyKey`` dkimpy calls, backed by ``cryptography``."""

    def __init__(self, key: bytes, encoder: object = None) -> None:
        self._key = Ed25519PublicKey.from_public_bytes(base64.b64decode(key))

    def verify(self, message: bytes, signature: bytes) -> bytes:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            raise _BadSignature from None
        return message


NACL_SHIM = SimpleNamespace(
    signing=SimpleNamespace(VerifyKey=_VerifyKey),
    encoding=SimpleNamespace(Base64Encoder=None),
    exceptions=SimpleNamespace(BadSignatureError=_BadSignature, ValueError=ValueError),
)


def verify_ed25519(signed: bytes, dns: DnsFunc) -> bool:
    assert signature_tags(signed, 1)[b"a"] == b"ed25519-sha256"
    try:  # what dkim.verify() does for the first signature, here for the second
        return bool(dkimpy.DKIM(signed).verify(idx=1, dnsfunc=dns))
    except dkimpy.DKIMException:
        return False


@pytest.mark.parametrize("eightbit", [True, False], ids=["8bit", "quoted-printable"])
def test_ed25519_signature_verifies_through_dkimpy(
    eightbit: bool, signer: DkimSigner, dns: DnsFunc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dkimpy verifies ed25519-sha256 itself (parsing, canonicalisation, hashing) but calls
    PyNaCl for the last step. PyNaCl is not a dependency of the project; when it is missing,
    that one call goes to ``cryptography``'s Ed25519 (the same RFC 8032 verification)."""
    if not hasattr(dkimpy, "nacl"):
        monkeypatch.setattr(dkimpy, "nacl", NACL_SHIM, raising=False)
    signed = signer.sign(template("digest", eightbit).personalise(values()))
    assert verify_ed25519(signed, dns)
    assert h_tag(signed, 1) == h_tag(signed, 0)
    assert not verify_ed25519(tamper_body(signed), dns)
    assert not verify_ed25519(tamper_subject(signed), dns)


def test_ed25519_with_pynacl(signer: DkimSigner, dns: DnsFunc) -> None:
    if not hasattr(dkimpy, "nacl"):
        pytest.skip("PyNaCl is not installed: dkimpy cannot verify ed25519-sha256 without it")
    signed = signer.sign(template("alert", True).personalise(values()))
    assert verify_ed25519(signed, dns)


# -- canonicalisation and speed -----------------------------------------------------------

_PIECES = st.sampled_from([b" ", b"  ", b"\t", b"\r\n", b"\r", b"\n", b"x", "ب".encode(), b"="])


@given(st.lists(_PIECES, max_size=40).map(b"".join))
def test_body_canonicalisation_is_dkimpys(body: bytes) -> None:
    assert canonical_body(body) == Relaxed.canonicalize_body(body)


# Values as readers' names and URLs are: inner spaces and tabs, but none at either end.
_WORDS = st.builds(
    lambda a, inner, b: a + inner + b,
    st.sampled_from([b"x", "ب".encode(), b"="]),
    st.lists(st.sampled_from([b" ", b"  ", b"\t", b"x", "ب".encode()]), max_size=5).map(b"".join),
    st.sampled_from([b"x", "ب".encode(), b"="]),
)


# Static text as a template's is: CRLF line ends only.
_CLEAN_LINES = st.lists(
    st.sampled_from([b" ", b"  ", b"\t", b"\r\n", b"x", "ب".encode(), b"="]), max_size=12
).map(b"".join)


def relaxed_bh(body: bytes) -> bytes:
    return base64.b64encode(hashlib.sha256(Relaxed.canonicalize_body(body)).digest())


@given(
    st.lists(
        st.one_of(_CLEAN_LINES, st.lists(_PIECES, max_size=12).map(b"".join)),
        min_size=1,
        max_size=6,
    ),
    st.lists(
        st.one_of(
            _WORDS,
            st.just(b""),
            _WORDS.map(b" ".__add__),
            _WORDS.map(lambda w: w + b"\t"),
            st.lists(_PIECES, max_size=6).map(b"".join),
        ),
        min_size=5,
        max_size=5,
    ),
)
def test_a_template_body_hash_is_the_hash_of_the_whole_body(
    segments: list[bytes], values: list[bytes]
) -> None:
    """Whenever the shortcut answers, it is dkimpy's bh= of the body as joined."""
    indices = [i % 5 for i in range(len(segments) - 1)]
    body = segments[0] + b"".join(values[i] + s for i, s in zip(indices, segments[1:], strict=True))
    got = BodyHasher(segments, indices).body_hash(values)
    assert got is None or got == relaxed_bh(body)


@pytest.mark.parametrize("eightbit", [True, False], ids=["8bit", "quoted-printable"])
@pytest.mark.parametrize("kind", KINDS)
def test_signing_with_the_template_body_hash_changes_nothing(
    kind: str, eightbit: bool, signer: DkimSigner, dns: DnsFunc
) -> None:
    """What the worker does (bh= from the edition's template) signs the same bytes as reading
    the whole message; quoted-printable values end in a soft break, so there it declines."""
    tpl = template(kind, eightbit)
    hasher = BodyHasher(*tpl.body())
    for reader in (values("a"), {**values("b"), ph.GREETING: "مرحباً  سارة\tعلي،"}):
        encoded = tpl.encode(reader)
        body_hash = hasher.body_hash(encoded)
        assert (body_hash is not None) == eightbit
        if body_hash is None:
            continue
        data = tpl.join(encoded)
        assert body_hash == relaxed_bh(data[data.index(b"\r\n\r\n") + 4 :])
        signed = signer.sign(data, body_hash=body_hash)
        assert signed == signer.sign(data)
        assert dkimpy.verify(signed, dnsfunc=dns)
    # A value that could merge with the text around it takes the ordinary path.
    assert hasher.body_hash(tpl.encode({**values("c"), ph.GREETING: " مرحباً "})) is None


_TEXT = st.lists(st.sampled_from([b" ", b"\t", b"a", b":", "ب".encode()]), max_size=5).map(b"".join)
_HEADER_LINE = st.one_of(
    st.builds(bytes.__add__, st.sampled_from([b"To:", b"x-Y:", b"To :", b"Subject:"]), _TEXT),
    st.builds(bytes.__add__, st.sampled_from([b" ", b"\t"]), _TEXT),  # a continuation
    st.builds(bytes.__add__, st.sampled_from([b"From ", b"bad", b"\x7f:", b"A"]), _TEXT),
)


@given(st.lists(_HEADER_LINE, max_size=6).map(b"\r\n".join), st.sampled_from([b"", b"\r\n"]))
def test_header_splitting_is_dkimpys(block: bytes, end: bytes) -> None:
    block += end  # a message without a body may end in CRLF
    try:
        expected = [tuple(field) for field in dkimpy.rfc822_parse(block + b"\r\n\r\n")[0]]
    except (dkimpy.MessageFormatError, IndexError):  # IndexError: a continuation comes first
        with pytest.raises(ValueError, match="cannot DKIM-sign"):
            header_fields(block)
    else:
        assert header_fields(block) == expected


@given(
    st.lists(st.tuples(st.sampled_from([b"from", b"to", b"subject"]), _TEXT), max_size=8),
    st.lists(st.sampled_from([b"from", b"to", b"subject", b"date"]), max_size=8),
)
def test_header_selection_is_dkimpys(
    headers: list[tuple[bytes, bytes]], include: list[bytes]
) -> None:
    """Bottom-up, each field once: a second From added on top is what oversigning catches."""
    chosen = dkimpy.select_headers(headers, include)
    assert signed_header_data(headers, include) == b"".join(n + b":" + v for n, v in chosen)


@given(
    st.lists(
        st.tuples(
            st.lists(
                st.sampled_from([b"To", b"x-Y", b" ", b"\t", b"A"]), min_size=1, max_size=4
            ).map(b"".join),
            st.lists(_PIECES, max_size=30).map(b"".join),
        ),
        max_size=5,
    )
)
def test_header_canonicalisation_is_dkimpys(headers: list[tuple[bytes, bytes]]) -> None:
    assert canonical_headers(headers) == Relaxed.canonicalize_headers(headers)


def test_signing_is_many_times_faster_than_dkimpy(keys: KeyFiles, signer: DkimSigner) -> None:
    """The reason for the fast path: dkimpy's pure-Python RSA costs ≈ 6 ms a message."""
    subject, html, text = rendered("digest")
    big = MessageSpec(
        subject=subject,
        html=html * (30_000 // len(html.encode()) + 1),
        text=text,
        sender=f"<alerts@{DOMAIN}>",
        reply_to=None,
        list_id=f"breaking.{DOMAIN}",
        kind="digest",
    )
    message = MessageTemplate.build(big, eightbit=True).personalise(values())
    assert len(message) > 30_000
    pem = keys.keys[0].path.read_bytes()

    def best(run: Callable[[], object], times: int) -> float:
        timings = []
        for _ in range(times):
            start = time.perf_counter()
            run()
            timings.append(time.perf_counter() - start)
        return min(timings)

    fast = best(lambda: signer.sign(message), 20)
    slow = best(lambda: dkimpy.sign(message, b"news2026", DOMAIN.encode(), pem), 3)
    assert fast * 4 < slow, (fast, slow)


# -- keys, records, configuration --------------------------------------------------------


def test_generated_keys_are_private_and_records_are_publishable(keys: KeyFiles) -> None:
    rsa, ed = keys.keys
    for key in keys.keys:
        assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
        assert key.path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert key.record.startswith(f"{key.name} IN TXT ")
        assert txt_value(key.record) == key.value
    assert rsa.name == f"news2026._domainkey.{DOMAIN}"
    assert rsa.value.startswith("v=DKIM1; k=rsa; p=MIIBIjAN")  # a 2048-bit SubjectPublicKeyInfo
    assert len(re.findall(r'"[^"]*"', rsa.record)) == 2  # 392 characters need two strings
    assert ed.selector == "news2026-ed25519"
    assert re.fullmatch(r"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=", ed.value)


def test_keygen_never_overwrites_a_key(keys: KeyFiles) -> None:
    before = keys.keys[0].path.read_bytes()
    with pytest.raises(FileExistsError, match=r"news2026\.pem exists"):
        generate_keys("news2026", DOMAIN, keys.keys[0].path.parent)
    assert keys.keys[0].path.read_bytes() == before


def test_dns_record_from_a_public_key_file(keys: KeyFiles) -> None:
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(keys.keys[0].path.read_bytes(), None)
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert dns_txt_record(der, "news2026", DOMAIN) == keys.keys[0].record
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        dns_txt_record(der, "news2026", DOMAIN, kind="ed25519")


def settings_for(keys: KeyFiles, **changes: str) -> Settings:
    rsa, ed = keys.keys
    values: dict[str, str] = {
        "sender": f"النشرة <alerts@{DOMAIN}>",
        "dkim_selector": rsa.selector,
        "dkim_key_file": str(rsa.path),
        "dkim_domain": "",
        "dkim_ed25519_selector": ed.selector,
        "dkim_ed25519_key_file": str(ed.path),
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


def test_signer_from_settings_signs_with_both_keys(keys: KeyFiles, dns: DnsFunc) -> None:
    signer = DkimSigner.from_settings(settings_for(keys))
    assert signer is not None and signer.domain == DOMAIN  # the From domain by default
    assert signer.selectors == ["news2026", "news2026-ed25519"]
    assert dkimpy.verify(signer.sign(template("alert", True).personalise(values())), dnsfunc=dns)


def test_no_key_configured_means_no_signing() -> None:
    assert DkimSigner.from_settings(Settings()) is None


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        (
            {"dkim_key_file": "/nonexistent/dkim.pem"},
            "cannot read DKIM key .*/nonexistent/dkim.pem",
        ),
        ({"dkim_selector": ""}, "MAILER_DKIM_SELECTOR is not set"),
        ({"dkim_ed25519_key_file": ""}, "MAILER_DKIM_ED25519_KEY_FILE is not set"),
        ({"dkim_domain": "other.example"}, "does not align with the From domain"),
        ({"dkim_selector": "bad selector"}, "not a DKIM selector"),
    ],
)
def test_misconfiguration_is_a_clear_error(
    keys: KeyFiles, changes: dict[str, str], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        DkimSigner.from_settings(settings_for(keys, **changes))


def test_a_parent_domain_may_sign_dmarc_relaxed(keys: KeyFiles) -> None:
    signer = DkimSigner.from_settings(settings_for(keys, dkim_domain="example.com"))
    assert signer is not None and signer.domain == "example.com"


def test_a_key_that_is_not_rsa_or_not_a_key_is_refused(keys: KeyFiles, tmp_path: Path) -> None:
    ed_pem = keys.keys[1].path.read_bytes()
    with pytest.raises(ValueError, match="must be RSA"):
        DkimSigner(domain=DOMAIN, selector="s", private_key_pem=ed_pem)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        DkimSigner.from_settings(settings_for(keys, dkim_key_file=str(garbage)))
