"""Run mode ``clusters``: the clusters registry (upstream's clusters-db-service)."""
