"""pprl: PPRL-VGAN (Chen et al., CVPR-W 2018) as a Lightning + Hydra framework."""

__version__ = "0.1.0"
