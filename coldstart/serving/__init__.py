"""The Ray-free core of serving: content of new items and users, the generator, the item index,
the registration store, the request logic and the HTTP API. `serve/` wraps these in deployments."""
