"""Newsletter and breaking-news delivery for Arabic-language newsrooms.

The package is the domain: configuration, database, rendering, message building, the SMTP
transport and the delivery services. It never imports Celery, Redis or ``workers``; it reaches
the queue through :class:`mailer.dispatch.Dispatcher`, which ``workers`` implements.
"""
