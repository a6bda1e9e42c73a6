"""Fixtures of the reader-page tests (see :mod:`tests.web.site`)."""

from tests.web.site import pg_site, site

__all__ = ["pg_site", "site"]
