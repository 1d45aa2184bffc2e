"""Collection-level integration tests run from the repository root with the .venv python."""
