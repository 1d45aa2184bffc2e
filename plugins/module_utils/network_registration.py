# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Registering a cluster's add-ons with the registries of the AIOS network.

Upstream AIOS keeps one registry per kind of add-on, each with the same routes
(``POST /<kind>``, ``GET|PUT|DELETE /<kind>/<id>``) and documents whose fields carry the
kind as their prefix (services/registries/container-registry/core/schema.py,
assets-db/assets-db-registry/core/schema.py, inference-registry/core/schema.py). A policy
executor is registered with the network's policies system instead (``POST /executors``
``{"id", "url"}``, ``DELETE /executors/{id}``), which answers with the executor's own
token, once.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.aios.platform.plugins.module_utils.api_client import path_segment

# Kind -> the prefix of its document's fields (also the registry's route).
REGISTRY_KINDS = ("container_registry", "asset_registry", "inference_server")
KINDS = REGISTRY_KINDS + ("executor",)  # noqa: RUF005 - Python 2 syntax for ansible-test


def registry_document(kind, registration_id, name, public_url, metadata=None, tags=None,
                      extra=None):
    """The document upstream's registry of ``kind`` stores, field by field."""
    document = {
        kind + "_id": registration_id,
        kind + "_name": name,
        kind + "_metadata": dict(metadata or {}),
        kind + "_tags": list(tags or []),
        kind + "_public_url": public_url,
    }
    for key, value in (extra or {}).items():
        field = key if key.startswith(kind + "_") else kind + "_" + key
        document[field] = value
    return document


def executor_document(executor_id, url):
    """The body of the policies system's ``POST /executors``."""
    return {"id": executor_id, "url": url.rstrip("/")}


def registry_path(kind, registration_id=None):
    if registration_id is None:
        return "/" + kind
    return "/%s/%s" % (kind, path_segment(registration_id))


def unwrap(answer):
    """The document of an upstream answer ``{"success": true, "data": {...}}`` (or a bare one)."""
    if isinstance(answer, dict) and isinstance(answer.get("data"), dict):
        return answer["data"]
    return answer if isinstance(answer, dict) else {}


def differences(wanted, found):
    """The fields of ``wanted`` whose value ``found`` does not have (sorted)."""
    return sorted(key for key, value in wanted.items() if found.get(key) != value)


def find_executor(listing, executor_id):
    for document in listing or []:
        if isinstance(document, dict) and document.get("id") == executor_id:
            return document
    return None
