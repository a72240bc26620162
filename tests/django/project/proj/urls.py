from django.contrib import admin
from django.urls import path

from orders.views import add_later

urlpatterns = [path("admin/", admin.site.urls), path("add/", add_later)]
