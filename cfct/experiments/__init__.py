"""Experiments as store jobs (provisional package: see :mod:`cfct.experiments.jobs`)."""
