"""Tables of mixed columns: the invertible encoding (:mod:`.encoding`), the table VAE
(:mod:`.model`) and the quality metrics (:mod:`.metrics`, needs the ``tabular`` extra: pandas and
scikit-learn, imported on first use). The mixed observation model is one of the observation
models (:mod:`pyro_lvae.observations.table`), re-exported here.
"""

from ..observations.table import SIGMA_MODES, MixedColumns, MixedObservation
from .encoding import Column, TableTransformer, read_csv
from .model import TabularModel

__all__ = ["Column", "TableTransformer", "read_csv", "TabularModel", "MixedObservation",
           "MixedColumns", "SIGMA_MODES"]
