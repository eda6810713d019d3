"""Importing this module registers `toy/Countdown-v0`, so that `--env
toyenvs_registered:toy/Countdown-v0` works in `opd` subprocesses (the `module:Id` form). The
test process itself never imports it, so the ids the env tests enumerate stay the library's."""

import gymnasium as gym
from toyenvs import Countdown

gym.register("toy/Countdown-v0", entry_point=Countdown)
