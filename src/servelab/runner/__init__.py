"""Orchestration: the lifecycle of a run, from preflight to stop."""
