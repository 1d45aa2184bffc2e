# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one HTTP client of the collection's API modules (policy runtime, clusters registry)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible.module_utils.six.moves.urllib.parse import quote, urlencode
from ansible.module_utils.urls import fetch_url

# Options every API module takes.
API_ARGUMENT_SPEC = dict(
    api_url=dict(type="str", required=True),
    api_token=dict(type="str", no_log=True),
    validate_certs=dict(type="bool", default=True),
    timeout=dict(type="int", default=30),
)


class ApiError(Exception):
    """A request that failed; the message names the call and the server's reason."""

    def __init__(self, message, status=None, body=None):
        super(ApiError, self).__init__(message)
        self.status = status
        self.body = body


def path_segment(value):
    return quote(str(value), safe=":")


class AiosApi:
    """JSON over HTTP with the module's connection options."""

    def __init__(self, module):
        self.module = module
        self.base = module.params["api_url"].rstrip("/")

    def request(self, method, path, body=None, params=None, ok=(200, 201, 204)):
        """(status, decoded JSON or None); ApiError for statuses not in ``ok``."""
        url = self.base + path + ("?" + urlencode(params) if params else "")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        token = self.module.params.get("api_token")
        if token:
            headers["Authorization"] = "Bearer %s" % token
        response, info = fetch_url(
            self.module, url, data=None if body is None else json.dumps(body), headers=headers,
            method=method, timeout=self.module.params["timeout"],
        )
        status = info.get("status", -1)
        # On HTTP errors fetch_url has already read the body into info["body"].
        raw = info.get("body") or (response.read() if response is not None else b"")
        data = None
        if raw:
            try:
                data = json.loads(raw)
            except ValueError:
                data = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if status not in ok:
            reason = data.get("detail") or data.get("message") if isinstance(data, dict) else data
            raise ApiError("%s %s failed (%s): %s" % (method, url, status, reason or info.get("msg")),
                           status, data)
        return status, data
