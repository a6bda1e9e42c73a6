"""Admin UI commands: ``mailer users create``."""

from __future__ import annotations
