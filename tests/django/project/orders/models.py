from django.db import models


class Order(models.Model):
    number = models.CharField(max_length=20, unique=True)
    total = models.IntegerField(default=0)
    note = models.CharField(max_length=50, default="")
