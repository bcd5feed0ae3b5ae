"""A heavy-tailed observation model: Student-t with a per-dimension scale from the decoder and
learned degrees of freedom, for data with outliers.

**References**

- K. L. Lange, R. J. A. Little, J. M. G. Taylor. *Robust Statistical Modeling Using the t
  Distribution*. Journal of the American Statistical Association 84(408), 1989.
- V. Berger, M. Sebag. *Variational Auto-Encoders: Not all failures are equal*.
  arXiv:2003.01972 (the learned per-dimension scale it extends).
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroParam

from ..errors import ConfigError, check_positive
from .normal import _DecoderScale

__all__ = ["StudentTObservation"]


class StudentTObservation(_DecoderScale):
    """``p(x_i | z) = StudentT(df, mu_i(z), s_i(z))`` independently per dimension: the decoder
    outputs the location and the scale per dimension (2 outputs per channel, the scale as in
    :class:`~pyro_lvae.LearnedVectorScale`: ``min_scale + softplus(raw + c)``), and the degrees
    of freedom ``df`` are one learned ``PyroParam``, ``min_df + exp(u)``.

    As ``df`` grows the model becomes LV-VAE's Normal; a small ``df`` gives outliers a
    log-density that falls like ``-(df + 1) log |x - mu|`` rather than ``-(x - mu)^2``, so they
    pull the mean and the scale far less. The scale is not the standard deviation: that is
    ``s sqrt(df / (df - 2))`` (finite for ``df > 2``, which the default floor keeps), what
    :meth:`spread` and :meth:`pyro_lvae.VAE.spread` report; :meth:`pyro_lvae.VAE.sigma`
    reports the scale ``s``.

    :param float init_scale: the scale for a raw decoder output of 0; ``None`` (default): half
        the spread of the first batch of data
    :param float min_scale: floor on every scale
    :param float init_df: the degrees of freedom at the start (> ``min_df``)
    :param float min_df: floor on the degrees of freedom (2: finite variance)

    **References**

    - K. L. Lange, R. J. A. Little, J. M. G. Taylor. *Robust Statistical Modeling Using the t
      Distribution*. JASA 1989.
    """

    kind = "student-t"
    label, learned = "Student-t", True

    def __init__(self, *, init_scale: float | None = None, min_scale: float = 1e-3,
                 init_df: float = 5.0, min_df: float = 2.0) -> None:
        super().__init__(init_scale=init_scale, min_scale=min_scale)
        self.init_df = check_positive("init_df", init_df)
        self.min_df = check_positive("min_df", min_df)
        if not self.init_df > self.min_df:
            raise ConfigError(f"Expected init_df > min_df but got init_df={init_df}, "
                              f"min_df={min_df}")
        self.df = PyroParam(torch.tensor(self.init_df), constraints.greater_than(self.min_df))

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        loc, scale = self.loc_and_scale(output, event_dim)
        return dist.StudentT(self.df.to(output.dtype), loc, scale).to_event(event_dim)

    def spread(self, output: torch.Tensor, event_dim: int) -> torch.Tensor:
        """The standard deviation per dimension, ``s sqrt(df / (df - 2))`` for ``df > 2`` (the
        default floor keeps it there), ``inf`` for ``df <= 2``, where the variance is not
        finite (the scale ``s`` itself is what :meth:`pyro_lvae.VAE.sigma` reports)."""
        _, scale = self.loc_and_scale(output, event_dim)
        df = self.df.to(output.dtype)
        ratio = torch.where(df > 2, df / (df - 2).clamp(min=torch.finfo(df.dtype).tiny),
                            torch.full_like(df, math.inf))
        return scale * ratio.sqrt()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "init_df": self.init_df, "min_df": self.min_df}


