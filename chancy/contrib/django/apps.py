"""The Django app: ``INSTALLED_APPS += ["chancy.contrib.django"]``."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class ChancyConfig(AppConfig):
    name = "chancy.contrib.django"
    label = "chancy"
    verbose_name = "Chancy"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Check ``settings.CHANCY`` now (a typo fails at start, not at the first push), and
        import each installed app's task modules, so that their Tasks are known to this
        process: to its workers, and to ``get_result()``."""
        from chancy.contrib.django.conf import chancy_settings

        modules = chancy_settings().task_modules
        if modules:
            autodiscover_modules(*modules)
