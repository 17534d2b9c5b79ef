"""The launchers by name (``--launcher``): one module per launcher, listed here."""
from __future__ import annotations

from trainscale.launchers.base import Launcher
from trainscale.launchers.local import LocalLauncher
from trainscale.launchers.ray_train import RayLauncher
from trainscale.launchers.slurm_steps import SlurmLauncher
from trainscale.launchers.torchft_groups import TorchftLauncher
from trainscale.launchers.torchrun import TorchrunLauncher
from trainscale.scaling.results.registry import Registry

LAUNCHERS: Registry[Launcher] = Registry("launcher", [LocalLauncher(), TorchrunLauncher(), RayLauncher(), SlurmLauncher(),
                                                 TorchftLauncher()])
