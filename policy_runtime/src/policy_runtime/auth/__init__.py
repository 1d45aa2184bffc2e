"""Scoped API tokens: roles and permissions, the token store, the audit log."""
