"""Parts of the `coldstart` command line that need nothing above the core; the app itself, and every command
that reaches up to `trainers/`, `tuning/` or `serve/`, is `coldstart.cli`."""
