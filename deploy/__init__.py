"""Deployment assets: the Envoy template and renderer, Dockerfiles, compose and Kubernetes."""
