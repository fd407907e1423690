"""Shared test settings: hypothesis profiles and the backend parametrisation.

HYPOTHESIS_PROFILE=ci (what .ci/run uses) derandomizes hypothesis, so CI is reproducible;
"dev" explores new examples on every run. The JIT and the first call of some ops are slow, so
no profile has a per-example deadline.
"""
import os

from hypothesis import HealthCheck, settings


settings.register_profile("dev", max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
