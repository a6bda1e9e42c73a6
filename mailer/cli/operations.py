"""Operator commands: API tokens, pruning, edition preview/test/resend (issue "Newsroom side")."""

from __future__ import annotations
