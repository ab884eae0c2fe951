"""Datasets: faces with identities, action frames."""
