"""Tasks of Django's task framework (``django.tasks``, or ``django_tasks`` on Django 5.2),
and one Celery-style task of the compat app: all run by the same Chancy worker."""
import asyncio
import os

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task

from proj.celery import app as celery_app


@task
def add(a: int, b: int) -> int:
    return a + b


@task
async def add_async(a: int, b: int) -> dict:
    await asyncio.sleep(0)
    return {"sum": a + b, "pid": os.getpid()}


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task(takes_context=True)
def whoami(context, label: str) -> dict:
    return {"id": context.task_result.id, "attempt": context.attempt, "label": label,
            "status": str(context.task_result.status)}


@task
def create_order(number: str, total: int) -> int:
    from orders.models import Order

    return Order.objects.create(number=number, total=total).pk


@task
def unstorable() -> object:
    return object()


@task(priority=7)
def ranked() -> str:
    return "ranked"


@celery_app.task
def multiply(a: int, b: int) -> int:
    return a * b
