"""pprl's Hydra plugins (Hydra finds plugins only in the `hydra_plugins` namespace package): `hydra/sweeper=optuna`
(`optuna_sweeper`, engine `pprl.sweep.search`) and `hydra/launcher=ray` (`ray_launcher`, engine
`pprl.sweep.ray_tasks`). Hydra imports every module here when it looks for plugins, so they import
neither optuna nor ray at the top: without the `search` / `ray` extra the command stops with one line naming it."""
