"""Optional TensorBoard logging for :func:`pyro_lvae.fit` (needs the ``tensorboard`` package:
``pip install 'pyro-lvae[tensorboard]'``).

    fit(vae, data, ..., tools=[TensorBoardCallback("runs/tb")])

logs every recorded step's loss, reconstruction, KL, beta and sigma, and, for image models,
a grid of decoder means for fixed latent codes every ``image_every`` steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .tools import Run, Tool

__all__ = ["TensorBoardCallback"]


class TensorBoardCallback(Tool):
    """A training tool (:mod:`pyro_lvae.training.tools`): write the training history (and
    image grids) to a TensorBoard log folder, on rank 0, at every check.

    :param str logdir: the log folder
    :param int image_every: steps between image grids (image models)
    :param int images: images per grid
    """

    order = 70

    def __init__(self, logdir: str, image_every: int = 1000, images: int = 16) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises this when tensorboard itself is missing
            raise ConfigError("TensorBoard logging needs the tensorboard package: "
                              "pip install 'pyro-lvae[tensorboard]'") from None
        self.writer = SummaryWriter(logdir)
        self.image_every, self.images = image_every, images
        self._z: torch.Tensor | None = None
        self._last_image = -image_every

    def __call__(self, step: int, rows: dict[str, np.ndarray], vae: Any) -> None:
        for i, s in enumerate(rows["step"]):
            for name in ("loss", "reconstruction", "kl", "beta", "sigma", "grad_norm"):
                if name not in rows:  # grad_norm: recorded with clip_grad_norm only
                    continue
                value = float(rows[name][i])
                if np.isfinite(value):
                    self.writer.add_scalar(f"train/{name}", value, int(s))
        shape = getattr(vae, "data_shape", None)
        if shape is not None and len(shape) == 3 and step - self._last_image >= self.image_every:
            if self._z is None:
                gen = torch.Generator().manual_seed(0)
                self._z = torch.randn(self.images, vae.latent_dim, generator=gen)
            means = vae.likelihood(self._z.to(vae.device)).mean.clamp(0, 1).cpu()
            self.writer.add_images("generation/means", means, step)
            self._last_image = step
        self.writer.flush()

    def on_check(self, run: Run, done: int, rows: dict[str, np.ndarray]) -> None:
        if run.rank == 0:
            self(done, rows, run.vae)

    def close(self, run: Run | None = None) -> None:
        """Flush and close the event file."""
        self.writer.close()

    def __repr__(self) -> str:
        return f"TensorBoardCallback({self.writer.log_dir!r})"
