"""Perturbation methods: each produces a per-tensor transform for the streaming writer."""
