"""Upstream side: load balancers, cluster runtime state, keep-alive connection pools."""
