"""The shop's tasks: ORM work, as in any Django project using Celery."""
import os

from django.db import connection

from shop.models import Order

if os.environ.get("PROJ_TASK_RUNNER", "chancy") == "celery":
    from celery import shared_task
else:
    from chancy.compat import shared_task


@shared_task
def create_order(number: str, total: int) -> int:
    """Create a row and read it back through a new query."""
    Order.objects.create(number=number, total=total)
    return Order.objects.get(number=number).pk


@shared_task(name="shop.mark-paid")
def mark_paid(number: str) -> str:
    Order.objects.filter(number=number).update(status="paid")
    return Order.objects.get(number=number).status


@shared_task
def send_receipt(number: str) -> bool:
    return Order.objects.filter(number=number).update(receipt_sent=True) == 1


@shared_task
def order_total(number: str) -> int:
    return Order.objects.get(number=number).total


@shared_task
def lose_connection() -> None:
    """Ends this task's own database session, leaving Django holding a dead connection,
    as a server restart or an idle timeout would."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
