"""servelab: an A/B lab for LLM serving configurations."""

__version__ = "0.1.0"
