"""Found by autodiscover_tasks()."""

from chancy.compat import shared_task


@shared_task
def discovered():
    return "found"
