"""Cases as data: (uri, database) -> expected URI or the error it must raise."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.aios.platform.plugins.filter.mongo_uri import mongo_uri

CASES = [
    ("mongodb://registry-0:27017/?replicaSet=rs0", "blocks",
     "mongodb://registry-0:27017/blocks?replicaSet=rs0"),
    ("mongodb://a:1,b:2,c:3", "clusters", "mongodb://a:1,b:2,c:3/clusters"),
    ("mongodb://user:p%40ss@db.example:27017/admin?tls=true&authSource=admin", "policies",
     "mongodb://user:p%40ss@db.example:27017/policies?tls=true&authSource=admin"),
    ("mongodb+srv://cluster0.example.net/old", "vdags", "mongodb+srv://cluster0.example.net/vdags"),
]

ERRORS = [
    ("http://db:27017/x", "blocks", "is not a mongodb://"),
    ("mongodb:///nohost", "blocks", "is not a mongodb://"),
    ("mongodb://db:27017", "bad/name", "database 'bad/name'"),
    ("mongodb://db:27017", "", "database ''"),
]


@pytest.mark.parametrize(("uri", "database", "expected"), CASES)
def test_mongo_uri(uri: str, database: str, expected: str) -> None:
    assert mongo_uri(uri, database) == expected


@pytest.mark.parametrize(("uri", "database", "message"), ERRORS)
def test_mongo_uri_errors(uri: str, database: str, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        mongo_uri(uri, database)
