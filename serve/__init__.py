"""Ray Serve deployments (encoder, generator, ranker) and the HTTP app."""
