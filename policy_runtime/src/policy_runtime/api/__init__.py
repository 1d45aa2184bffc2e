"""The HTTP API (FastAPI), built per run mode by create_app()."""
