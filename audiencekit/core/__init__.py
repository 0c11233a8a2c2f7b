"""The provider-neutral machinery beneath every backend: transport, rate governor, clock, bulk
engine, polling, wire helpers, the shared base backend.

Internal: its modules may change in any release. Users meet its public parts through the public
modules; providers through :mod:`audiencekit.providers.base`.
"""
