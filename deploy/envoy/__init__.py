"""Envoy in front of Chorus: one template (``envoy.yaml.j2``) rendered by ``render.py``."""
