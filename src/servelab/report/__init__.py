"""Rendering results for people: tables now, Markdown and HTML reports later."""
