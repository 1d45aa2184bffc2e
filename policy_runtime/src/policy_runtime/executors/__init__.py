"""Remote policy execution: the executor registry and the client a controller uses."""
