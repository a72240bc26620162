"""Settings of the test project: one Postgres database (``PROJ_DATABASE_DSN``) holds
Django's tables and Chancy's; jobs run through Django's task framework (on Chancy's
backend), a DjangoChancy app and a chancy.compat Celery app, all served by one worker."""
import importlib.util
import json
import os

from psycopg.conninfo import conninfo_to_dict

DSN = os.environ["PROJ_DATABASE_DSN"]
_params = conninfo_to_dict(DSN)

SECRET_KEY = "test-project-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
    "django.contrib.messages", "chancy.contrib.django", "orders",
]
if os.environ.get("PROJ_WITHOUT_CHANCY_APP"):  # a test of `manage.py check`
    INSTALLED_APPS.remove("chancy.contrib.django")
if importlib.util.find_spec("django.tasks") is None:  # Django 5.2: the framework's backport
    INSTALLED_APPS.append("django_tasks")
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "proj.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _params.get("dbname", ""),
        "USER": _params.get("user", ""),
        # The tests give a password (the test server trusts local connections) and a wrong
        # port, to see that no message shows the password.
        "PASSWORD": os.environ.get("PROJ_DATABASE_PASSWORD", _params.get("password", "")),
        "HOST": _params.get("host", ""),
        "PORT": os.environ.get("PROJ_DATABASE_PORT", _params.get("port", "")),
        "CONN_MAX_AGE": None,
    }
}
# A second alias of the same database: a push joins the atomic block open on whichever alias.
DATABASES["jobs"] = dict(DATABASES["default"])
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

#: One queue per executor, so one worker runs every check under each pool.
POOLS = ["process", "thread", "asyncio", "solo"]
CHANCY = {
    "DATABASE": "default",
    "APP": "proj.jobs:app",
    "QUEUES": {
        "process": {"executor": "process", "concurrency": 2, "polling_interval": 0.2},
        "thread": {"executor": "thread", "concurrency": 2, "polling_interval": 0.2},
        "asyncio": {"executor": "asyncio", "concurrency": 2, "polling_interval": 0.2},
        "solo": {"executor": "solo", "concurrency": 1, "polling_interval": 0.2},
    },
}
CHANCY.update(json.loads(os.environ.get("PROJ_CHANCY_OVERRIDES", "{}")))  # the tests' bad settings
if os.environ.get("PROJ_DEFAULT_APP"):  # the app chancy.contrib.django makes when none is named
    del CHANCY["APP"]
TASKS = {
    "default": {
        "BACKEND": "chancy.contrib.django.backend.ChancyBackend",
        "QUEUES": ["default", "idle", *POOLS],
    }
}
CELERY_BROKER_URL = "chancy+" + os.environ.get("PROJ_BROKER_DSN", DSN)  # the tests' other database
CELERY_RESULT_BACKEND = CELERY_BROKER_URL
