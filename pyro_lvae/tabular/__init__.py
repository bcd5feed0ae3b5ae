"""Tables of mixed columns, in one place: the invertible encoding (:mod:`.encoding`), the mixed
observation model (:mod:`.observation`), the table VAE (:mod:`.model`) and the quality metrics
(:mod:`.metrics`, needs the ``tabular`` extra: pandas and scikit-learn, imported on first use).
"""

from .encoding import Column, TableTransformer, read_csv
from .model import TabularModel
from .observation import SIGMA_MODES, MixedColumns, MixedObservation

__all__ = ["Column", "TableTransformer", "read_csv", "TabularModel", "MixedObservation",
           "MixedColumns", "SIGMA_MODES"]
