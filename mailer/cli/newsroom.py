"""Newsroom commands: schedules and feed imports (issue "Newsroom side")."""

from __future__ import annotations
