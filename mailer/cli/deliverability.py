"""Deliverability commands: DKIM keys, suppressions, inbound bounces, SMTP status."""

from __future__ import annotations
