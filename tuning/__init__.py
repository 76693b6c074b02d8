"""Ray Tune searches that wrap the trainers' drivers; only search spaces and schedulers live here."""
