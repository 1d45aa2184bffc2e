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
        self._resource_names: set[str] = set()
        self.capacity = Gauge("nunet_plugin_capacity", "resources of the node's peers, "
                              "available or not (capacity)", ["resource"],
                              registry=self.registry)
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

    def observe_resources(self, capacity: dict[str, int], allocatable: dict[str, int]) -> None:
        """Both tables, every resource ever seen in either: one no peer offers any more,
        or none of whose cards is available, reads 0 rather than its last value."""
        self._resource_names |= capacity.keys() | allocatable.keys()
        for name in self._resource_names:
            self.capacity.labels(name).set(capacity.get(name, 0))
            self.resources.labels(name).set(allocatable.get(name, 0))
