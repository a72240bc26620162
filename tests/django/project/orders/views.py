"""A view enqueueing a task, as a project's views do (and so ``manage.py check``, which
loads the URLconf, loads the framework and checks its backends)."""
from django.http import HttpRequest, JsonResponse

from orders.tasks import add


def add_later(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"id": add.enqueue(1, 2).id})
