"""Gunicorn settings: `gunicorn -c gunicorn.conf.py penguin_api.wsgi:app`.

The settings and hooks live in the package (penguin_api/gunicorn_config.py), so that
`penguin-api serve` from an installed wheel uses them too; this file only exposes them.
"""

from penguin_api.gunicorn_config import *  # noqa: F403
