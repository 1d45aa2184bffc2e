# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    """The connection options of the modules that call the policy runtime's API."""

    DOCUMENTATION = r"""
options:
  api_url:
    description: Base URL of the policy runtime (or the cluster's controller).
    type: str
    required: true
  api_token:
    description: Bearer token of the API (C(AIOS_API_TOKEN) of the runtime).
    type: str
  validate_certs:
    description: Verify the API's TLS certificate.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each API call.
    type: int
    default: 30
"""
