# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes resource quantities ("8029384Ki", "40Gi", "250m", "1.5G") as numbers."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGTPE]i?|[numk]|e[0-9]+)?$")
_FACTORS = {
    None: 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 10 ** 3, "K": 10 ** 3, "M": 10 ** 6,
    "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18, "Ki": 2 ** 10, "Mi": 2 ** 20,
    "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60,
}
MIB = 2 ** 20


def parse_quantity(value):
    """The quantity as a float (bytes, or cores for CPU); None when it cannot be read."""
    match = _QUANTITY.match(str(value if value is not None else "").strip())
    if not match:
        return None
    number, suffix = float(match.group(1)), match.group(2)
    if suffix and suffix.startswith("e"):
        return number * 10 ** int(suffix[1:])
    return number * _FACTORS[suffix]


def to_mib(value):
    """A byte quantity in MiB (as upstream AIOS counts memory), rounded down; None if unreadable."""
    number = parse_quantity(value)
    return None if number is None else int(number // MIB)
