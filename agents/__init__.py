"""Policies: models that sample and score tokens (installed as opd_selfplay.agents)."""
