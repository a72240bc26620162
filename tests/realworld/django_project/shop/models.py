from django.db import models


class Order(models.Model):
    number = models.CharField(max_length=40, unique=True)
    total = models.IntegerField()
    status = models.CharField(max_length=20, default="new")
    receipt_sent = models.BooleanField(default=False)
