"""Input models: what the user asks servelab to run. Pure pydantic; unknown keys are errors."""
