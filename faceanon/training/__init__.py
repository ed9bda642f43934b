"""Trainers for the project's networks (generator first); each resumable from its output folder."""
