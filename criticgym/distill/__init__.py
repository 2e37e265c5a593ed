"""Distilled RLAIF: preference pairs labelled by an AI judge, and a reward model trained on their soft labels."""
