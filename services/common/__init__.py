"""Plumbing shared by every Chorus service: settings, server bootstrap, health, metrics,
logging, errors, bounded workers, model lifecycle and audio coding."""
