"""opd-selfplay: on-policy distillation of LLM agents on verifiable multi-turn environments.

The package root imports nothing heavy: `import opd_selfplay.envs` or `opd_selfplay.verifiers`
must not pull torch in (plugin authors install the library without the training stack).
"""

__version__ = "0.1.0"
