"""Admin pages for Chancy's jobs: a list filtered by state, queue and time, a read-only
detail page with each attempt's error and traceback, and retry / cancel actions for users
holding ``chancy.retry_job`` / ``chancy.cancel_job``. Actions go through Chancy, so each
is guarded by the job's state as every Chancy transition is."""

from __future__ import annotations

from typing import Any, Callable

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html_join

from chancy.contrib.django.app import default_app
from chancy.contrib.django.models import Job

#: A bulk action acts on at most this many jobs (one statement each).
ACTION_LIMIT = 1000


class QueueFilter(admin.SimpleListFilter):
    """The queues the project's app declares: listing the distinct values of the column, as
    Django's default filter does, would scan the whole table on every page."""

    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(default_app().queues)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(queue=self.value()) if self.value() else queryset


class EstimatedCountPaginator(Paginator):
    """Unfiltered, the page count comes from Postgres's row estimate: an exact count of a
    table of millions of jobs is a scan of all of them on every page."""

    @cached_property
    def count(self) -> int:
        query = self.object_list.query
        if query.where:
            return super().count
        store = default_app().store
        estimate = store.run_sync(store.admin.row_estimate(Job._meta.db_table))
        return super().count if estimate < 10_000 else estimate  # small or never analyzed: count


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "func", "queue", "state", "priority", "attempts", "created_at", "completed_at")
    list_filter = ("state", QueueFilter, "created_at")
    search_fields = ("=id", "func", "unique_key")
    show_full_result_count = False  # an exact count of a big table is a full scan
    paginator = EstimatedCountPaginator
    list_per_page = 50
    actions = ["retry_jobs", "cancel_jobs"]
    readonly_fields = ("id", "func", "queue", "state", "priority", "attempts", "max_attempts", "scheduled_at",
                       "expires_at", "created_at", "started_at", "completed_at", "taken_by", "unique_key",
                       "args", "kwargs", "meta", "result", "error_history")
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # rows change through Chancy only (the actions)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the pruner removes finished jobs

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("chancy.retry_job")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("chancy.cancel_job")

    @admin.display(description="errors")
    def error_history(self, job: Job) -> str:
        if not job.errors:
            return "—"
        return format_html_join("", "<p><b>{}</b>: {} <small>({})</small></p><pre>{}</pre>",
                                ((e.get("type", ""), e.get("message", ""), e.get("at", ""), e.get("traceback", ""))
                                 for e in job.errors))

    @admin.action(description="Retry the selected failed, cancelled or expired jobs",
                  permissions=["retry"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._act(request, queryset, default_app().requeue_sync, "retried",
                  "not failed, cancelled or expired")

    @admin.action(description="Cancel the selected jobs", permissions=["cancel"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._act(request, queryset, default_app().cancel_sync, "cancelled", "already finished")

    def _act(self, request: HttpRequest, queryset: QuerySet, act: Callable[[Any], bool], done: str,
             refused: str) -> None:
        ids = list(queryset.values_list("id", flat=True)[:ACTION_LIMIT + 1])
        if len(ids) > ACTION_LIMIT:
            self.message_user(request, f"Select at most {ACTION_LIMIT} jobs at a time (or use `manage.py chancy "
                              "jobs`)", messages.ERROR)
            return
        changed = sum(1 for job_id in ids if act(job_id))
        self.message_user(request, f"{changed} job(s) {done}.", messages.SUCCESS if changed else messages.WARNING)
        if changed < len(ids):
            self.message_user(request, f"{len(ids) - changed} job(s) left as they were: {refused}.",
                              messages.WARNING)
