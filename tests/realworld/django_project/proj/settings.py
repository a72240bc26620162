"""Settings of the test project: one Postgres database (``PROJ_DATABASE_DSN``) holds
Django's tables and Chancy's, and is the broker and the result backend."""
import os

from psycopg.conninfo import conninfo_to_dict

DSN = os.environ["PROJ_DATABASE_DSN"]
_params = conninfo_to_dict(DSN)

SECRET_KEY = "test-project-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "shop.apps.ShopConfig"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _params.get("dbname", ""),
        "USER": _params.get("user", ""),
        "PASSWORD": _params.get("password", ""),
        "HOST": _params.get("host", ""),
        "PORT": _params.get("port", ""),
        # Persistent connections: only the worker's per-task check closes a broken one.
        "CONN_MAX_AGE": None,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CELERY_BROKER_URL = "chancy+" + DSN
CELERY_RESULT_BACKEND = "chancy+" + DSN
