"""Placing an order: the row and the tasks it asks for are one unit of work."""
from django.db import transaction

from shop.models import Order
from shop.tasks import mark_paid, send_receipt


class PaymentDeclined(Exception):
    pass


def place_order(number: str, total: int, *, declined: bool = False) -> None:
    """Create the order; once it is committed, send its receipt and mark it paid (the
    two ways Celery's Django guide gives). A declined payment rolls all of it back."""
    with transaction.atomic():
        Order.objects.create(number=number, total=total)
        send_receipt.delay_on_commit(number)
        transaction.on_commit(lambda: mark_paid.apply_async((number,)))
        if declined:
            raise PaymentDeclined(number)


def place_order_with_declined_gift_card(number: str, total: int) -> None:
    """The gift-card step fails in its own savepoint: the order is kept, the receipt
    asked for inside that step is not sent."""
    with transaction.atomic():
        Order.objects.create(number=number, total=total)
        try:
            with transaction.atomic():
                send_receipt.delay_on_commit(number)
                raise PaymentDeclined(number)
        except PaymentDeclined:
            pass
