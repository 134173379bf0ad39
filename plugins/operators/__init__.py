"""Compatibility package for DAGs written for the original SCDockerOperator plugin."""
