"""Launchers beyond one machine: Cloud TPU VMs (gcloud) and GKE JobSets (kubectl)."""
