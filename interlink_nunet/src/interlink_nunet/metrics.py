"""Prometheus metrics of the plugin (``GET /metrics``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from interlink_nunet.dms import DMSError


class PluginMetrics:
    def __init__(self, mapped_jobs: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("nunet_plugin_requests_total", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.jobs_created = Counter("nunet_plugin_jobs_created_total", "jobs posted to DMS",
                                    registry=self.registry)
        self.jobs_deleted = Counter("nunet_plugin_jobs_deleted_total", "jobs deleted",
                                    registry=self.registry)
        self.dms_seconds = Histogram("nunet_plugin_dms_request_seconds", "DMS calls by operation",
                                     ["operation"], registry=self.registry)
        self.dms_errors = Counter("nunet_plugin_dms_errors_total", "failed DMS calls",
                                  ["operation"], registry=self.registry)
        self.resources = Gauge("nunet_plugin_allocatable", "allocatable resources of the node",
                               ["resource"], registry=self.registry)
        mapped = Gauge("nunet_plugin_mapped_jobs", "pods with a NuNet job",
                       registry=self.registry)
        mapped.set_function(mapped_jobs)
        self.pending_cancels = Gauge(
            "nunet_plugin_pending_cancels", "deleted pods whose NuNet job DMS has not confirmed "
            "cancelled yet (retried in the background)", registry=self.registry)
        self.resources_age = Gauge(
            "nunet_plugin_resources_age_seconds", "age of the resources the ping answers: "
            "seconds since DMS last answered the peers dump (-1 before the first)",
            registry=self.registry)

    @contextmanager
    def dms_call(self, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        except DMSError:
            self.dms_errors.labels(operation).inc()
            raise
        finally:
            self.dms_seconds.labels(operation).observe(time.perf_counter() - started)

    def observe_resources(self, table: dict[str, int]) -> None:
        for name, value in table.items():
            self.resources.labels(name).set(value)
