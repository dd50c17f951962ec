"""hydra-optuna-sweeper 1.4.0.dev10 on hydra-core 1.3 (``hydra.sweeper._target_`` in ``conf/hparams_search/``).

The pre-release's ``OptunaSweeper`` builds its sampler with ``instantiate(sampler, _execution_whitelist_=...)``, a
keyword of hydra-core 1.4. On hydra-core 1.3 that fails twice: Hydra has already built the nested sampler node into
an Optuna sampler when it builds the sweeper (1.3 instantiates plugins recursively: "Cannot instantiate config of
type TPESampler"), and 1.3 would pass ``_execution_whitelist_`` on to the sampler as an argument (TypeError). This
subclass takes the sampler as built (or builds a node it is given) and is otherwise the upstream sweeper. Hydra
loads sweepers only from the ``hydra_plugins`` namespace, hence this package. Remove it with hydra-core 1.4.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as UpstreamOptunaSweeper
from omegaconf import DictConfig


class OptunaSweeper(UpstreamOptunaSweeper):
    """The upstream sweeper, its sampler taken as hydra-core 1.3 hands it over."""

    def __init__(self, sampler: Any, direction: Any, storage: Any, study_name: str | None, n_trials: int, n_jobs: int,
                 max_failure_rate: float, custom_search_space: str | None, params: DictConfig | None) -> None:
        from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl  # optuna: only when a search runs

        if isinstance(sampler, (dict, DictConfig)):  # a node (hydra-core 1.4 builds plugins non-recursively)
            sampler = instantiate(sampler)
        self.sweeper = OptunaSweeperImpl(sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate,
                                         custom_search_space, params)
