"""Reader pages over HTTP: subscribe, confirm, preferences, unsubscribe."""
