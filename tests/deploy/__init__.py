"""Packaging checks: Dockerfile, Kubernetes manifests, kustomize build, manifest smoke test."""
