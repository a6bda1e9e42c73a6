# The application image: web, workers, beat and migrations all run from it (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --user-group mailer

WORKDIR /app
COPY pyproject.toml README.md ./
COPY mailer/ mailer/
COPY workers/ workers/
# Runtime dependencies and the `mailer` command; no dev extras.
RUN pip install .
# The email templates live beside the package, not inside it (mailer.rendering looks for
# <package>/../templates), so the code runs from /app rather than from site-packages.
COPY templates/ templates/
ENV PYTHONPATH=/app \
    MAILER_DATA_DIR=/app/var

RUN mkdir -p /app/var && chown mailer:mailer /app/var
USER mailer

EXPOSE 8000
CMD ["mailer", "serve", "--web-only", "--host", "0.0.0.0"]
