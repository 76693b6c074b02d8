"""The Ray-free core of serving: content of new items and users, the generator, the item index,
the registration store (a file log, or PostgreSQL on a cluster), the request logic, the HTTP API
and batch recommendations. `serve/` wraps these in deployments; `trainers/recommend.py` in a Ray
Data job."""
