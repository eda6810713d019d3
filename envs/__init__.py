"""Gymnasium environments for verifiable multi-turn text tasks (installed as opd_selfplay.envs).

Importing this package registers the built-in `opd/...` ids with Gymnasium.
"""
