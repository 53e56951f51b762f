"""hyphal on Kubernetes: API client, informers, registry and config sources, the injector.

Tested against a faithful fake API server (tests/kube/fake_api.py), not a live cluster;
see docs/kubernetes.md.
"""
