"""The ground floor: what every other room and command uses, importing nothing else of pprl.

`errors` (the one-line user errors), `paths` (caches), `imageio` (reading and writing image files safely),
`pixels` (uint8 images <-> the networks' [-1, 1] tensors, on the host or a device), `rundir` (a run dir's
checkpoint and config as files), `checkpoint` (writing `checkpoints/last.ckpt`), `loggers`, `speed` (precision,
channels-last, compile, the device data path), and the Hydra glue of every command: `config` (the config tree),
`cli` (`run_hydra`: plain arguments, `--help`, one-line errors), `clihelp` (the `--help` pages).
"""
