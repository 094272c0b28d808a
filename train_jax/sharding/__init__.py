"""Mesh construction and the logical-axis -> mesh-axis table (`rules.LOGICAL_TO_MESH`)."""
