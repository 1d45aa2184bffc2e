# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that build MongoDB connection URIs for the components of the install."""

from __future__ import annotations

DOCUMENTATION = r"""
name: mongo_uri
short_description: A MongoDB URI pointing at one database
version_added: 0.1.0
description:
  - Replace the database path of a C(mongodb://) or C(mongodb+srv://) URI with I(database),
    keeping hosts and options. Upstream AIOS registries read their database name from the URI path.
options:
  _input:
    description: The MongoDB connection URI.
    type: str
    required: true
  database:
    description: The database name to put in the URI path.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Point the blocks registry at its database
  ansible.builtin.debug:
    msg: "{{ 'mongodb://db-0:27017,db-1:27017/?replicaSet=rs0' | aios.platform.mongo_uri('blocks') }}"
  # -> mongodb://db-0:27017,db-1:27017/blocks?replicaSet=rs0
"""

RETURN = r"""
_value:
  description: The URI with I(database) as its path.
  type: str
"""

import re

from ansible.errors import AnsibleFilterError

_URI = re.compile(r"^(?P<scheme>mongodb(?:\+srv)?://)(?P<hosts>[^/?]+)(?:/(?P<path>[^?]*))?(?P<query>\?.*)?$")
_DATABASE = re.compile(r"^[A-Za-z0-9_-]{1,63}$")


def mongo_uri(uri, database):
    """``uri`` with ``database`` as its path; AnsibleFilterError naming the bad input."""
    match = _URI.match(str(uri))
    if match is None:
        raise AnsibleFilterError(
            "mongo_uri: %r is not a mongodb:// or mongodb+srv:// URI with hosts" % (uri,)
        )
    if not _DATABASE.match(str(database)):
        raise AnsibleFilterError(
            "mongo_uri: database %r must be 1-63 letters, digits, '_' or '-'" % (database,)
        )
    return "%s%s/%s%s" % (
        match.group("scheme"), match.group("hosts"), database, match.group("query") or ""
    )


class FilterModule:
    """The collection's MongoDB URI filters."""

    def filters(self):
        return {"mongo_uri": mongo_uri}
