"""The data commands: `python -m pprl.data` (what a dataset config finds, per-group counts) and
`python -m pprl.data.synthetic` (other cartoon characters as a folder tree). The data layer is `pprl.datasets`."""
