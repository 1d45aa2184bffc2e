"""Run mode ``controller``: pre-check policy maps, governed actions and the decision log."""
