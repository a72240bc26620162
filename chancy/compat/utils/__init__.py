"""``celery.utils`` helpers that task modules import."""
