"""``python -m mailer.cli.main``: the same CLI, for child processes."""

from mailer.cli import app

if __name__ == "__main__":
    app()
