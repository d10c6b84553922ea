"""Development tools: the local supervisor behind `make run`, a local Envoy, service processes.

Not services: nothing here ships in an image (deploy/docker/Dockerfile copies services/, gateway/
and deploy/ only).
"""
