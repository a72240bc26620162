"""Observability integrations, each optional and off until enabled:

- :mod:`chancy.observability.otel`: OpenTelemetry spans (push and run, linked through the
  job row) and worker metrics (``pip install "chancy[otel]"``);
- :mod:`chancy.observability.prometheus`: a worker's own metrics on an HTTP port
  (``chancy worker --metrics-port``, ``pip install "chancy[metrics]"``);
- :mod:`chancy.observability.attempts`: what both count about each finished attempt.

Job context on log records (job id, task, attempt) is always on: see :mod:`chancy.logs`.
See docs/observability.md."""
