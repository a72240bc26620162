"""Executors run claimed jobs for one queue and enforce their limits."""

from chancy.executors.base import Executor

__all__ = ["Executor"]
