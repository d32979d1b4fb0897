"""PPRL-VGAN itself (paper §4, Table 1): the networks (`nets`), the loss terms as small pure functions (`losses`,
eq. 5 and 6), one batch's objective with its weights in one flat dict (`objective`), the LightningModule with
manual optimisation (`module.PPRLVGAN`), its training callbacks, its config check (`checks`) and loading a
trained model from a checkpoint (`load`). Knows no data source, attack or command.
"""
