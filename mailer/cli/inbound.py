"""Inbound mail commands: bounces, complaints and mailto unsubscribes (``mailer inbound …``)."""

from __future__ import annotations
