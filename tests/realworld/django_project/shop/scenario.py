"""What the tests drive through ``manage.py shell -c``: calls as a Django process makes
them, printing the results as one JSON line."""
import json

from django.db import transaction

from shop.checkout import PaymentDeclined, place_order, place_order_with_declined_gift_card
from shop.models import Order
from shop.tasks import create_order, lose_connection, mark_paid, order_total

TIMEOUT = 60


def run() -> None:
    results = {"created": create_order.delay("A-1", 1200).get(timeout=TIMEOUT)}
    results["paid"] = mark_paid.delay("A-1").get(timeout=TIMEOUT)
    try:
        create_order.delay("A-1", 5).get(timeout=TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - the duplicate is refused by the unique index
        results["duplicate"] = type(exc).__name__
    try:
        lose_connection.delay().get(timeout=TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - the task's own session ended under it
        results["lost"] = type(exc).__name__
    results["total_after_loss"] = order_total.delay("A-1").get(timeout=TIMEOUT)
    try:
        place_order("B-declined", 10, declined=True)
    except PaymentDeclined:
        results["declined"] = True
    place_order("B-1", 30)
    place_order_with_declined_gift_card("C-1", 5)
    with transaction.atomic():  # a task run eagerly leaves the caller's transaction alone
        Order.objects.create(number="E-1", total=7)
        results["eager_total"] = order_total.apply(("E-1",)).get()
        Order.objects.filter(number="E-1").update(status="eager")
    print(json.dumps(results))
