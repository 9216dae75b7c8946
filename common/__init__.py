"""Helpers every app's views share. Depends on Django and the engine, never on an app."""
