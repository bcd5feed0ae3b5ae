"""The research layer: what the command line runs on each kind of data (:mod:`.tasks`,
:mod:`.points`), the paper's studies (:mod:`.studies`), their job pool (:mod:`.jobs`), the
figures (:mod:`.plots`, matplotlib) and the speed benchmark (:mod:`.bench`).

``import pyro_lvae`` does not import this package; it may import matplotlib and torchvision.
"""
