"""Run mode ``clusters``: the clusters registry (the seed's clusters-db-service)."""
