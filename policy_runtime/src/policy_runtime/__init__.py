"""AIOS policy runtime: a sandboxed store and executor of governance and stability policies."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aios-policy-runtime")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
