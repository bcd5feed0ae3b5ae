"""docs/scanvi.md runs as written (with fewer cells and epochs), and its likelihood is the
hand-written one of Pyro's scANVI example."""

import re
from pathlib import Path

import pyro.distributions as dist
import pytest
import torch

PAGE = Path(__file__).resolve().parents[1] / "docs" / "scanvi.md"


@pytest.fixture(scope="module")
def page():
    (block,) = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    small = block.replace("synthetic_counts(1000", "synthetic_counts(200").replace(
        "range(40)", "range(2)")
    assert small.count("synthetic_counts(200") == 1 and small.count("range(2)") == 1
    namespace: dict = {}
    exec(compile(small, str(PAGE), "exec"), namespace)
    namespace["keys"] = list(namespace["pyro"].get_param_store().keys())
    return namespace


def test_scanvi_page_trains_the_enumerated_program_and_its_theta(page):
    scanvi = page["scanvi"]
    theta = scanvi.x_obs.theta.detach()
    assert theta.shape == (200,) and torch.isfinite(theta).all()
    assert not torch.allclose(theta, torch.ones(200))  # trained from its start at 1
    theta_keys = [k for k in page["keys"] if "theta" in k]
    assert theta_keys == ["scanvi$$$x_obs.theta_param_unconstrained"]  # one, the module's
    assert 0.0 <= page["accuracy"] <= 1.0


def test_scanvi_page_likelihood_is_the_hand_written_zinb(page):
    """Pyro's ZeroInflatedNegativeBinomial with total_count theta, logits log(l mu) - log
    theta (torch's mean is total_count exp(logits)) and the gate from its logits, in float64:
    equal to the observation model's. The example's own logits, log theta - log(l mu), give
    the mean theta^2 / (l mu) instead, what docs/scanvi.md says."""
    obs, x = page["scanvi"].x_obs, page["x"][:6].double()
    torch.manual_seed(0)
    out = torch.randn(6, 400, dtype=torch.float64)
    library = torch.rand(6, dtype=torch.float64) * 2000 + 100
    ours = obs(out, 1, library=library).log_prob(x)
    logits, gate = out.chunk(2, -1)
    mu = library[:, None] * torch.softmax(logits, -1)
    theta = obs.theta.detach().double()
    hand = dist.ZeroInflatedNegativeBinomial(total_count=theta, logits=mu.log() - theta.log(),
                                             gate_logits=gate).to_event(1).log_prob(x)
    assert torch.allclose(ours, hand, rtol=1e-9, atol=1e-8)
    example = dist.NegativeBinomial(total_count=theta, logits=theta.log() - mu.log())
    assert torch.allclose(example.mean, theta ** 2 / mu)
    assert torch.allclose(obs(out, 1, library=library).base_dist.mean,
                          (1 - torch.sigmoid(gate)) * mu)
