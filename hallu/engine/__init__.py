"""Patching on a loaded model: the fast engine, the hook route, adapters per family, metrics.

torch lives here (and in hallu.behavior); nothing here imports Ray, boto3 or a store.
"""
