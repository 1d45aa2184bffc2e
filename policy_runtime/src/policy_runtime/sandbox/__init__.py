"""The policy sandbox: RestrictedPython compilation, guards, worker processes."""
