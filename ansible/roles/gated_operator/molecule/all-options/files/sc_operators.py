"""A site's own compatibility module, installed in place of the project's: verify finds its marker."""

from airflow_placement import GatedDockerOperator

SITE_MARKER = "gated_operator all-options"


class SCDockerOperator(GatedDockerOperator):
    """The operator existing DAGs import, gated by the placement document."""
