"""The project's native Chancy app (``CHANCY['APP']``) and a native task."""
from chancy.contrib.django import DjangoChancy

app = DjangoChancy()


@app.task
def tag_order(number: str, tag: str) -> str:
    from orders.models import Order

    Order.objects.filter(number=number).update(note=tag)
    return tag
