"""Experiment 1: generate answers under each condition, label their style, count them."""
