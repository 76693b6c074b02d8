"""coldstart: LLM-powered cold-start recommendation, trained and served on Ray.

This package is the Ray-free core (data, text, models, metrics, index,
artifacts). `trainers/`, `tuning/` and `serve/` build on it; it never imports
them or Ray, except `coldstart.cli`, which reaches up inside the commands that
need them. Every model is described once, in `coldstart.registry`: the lists of
models elsewhere (serving's generators, the pipeline's options and stages, the
train and tune commands, Tune's jobs) are derived from it.
"""

__version__ = "0.1.0"
