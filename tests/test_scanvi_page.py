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
    return namespace


def test_scanvi_page_trains_the_enumerated_program_and_its_theta(page, capsys):
    scanvi = page["scanvi"]
    theta = scanvi.x_obs.theta.detach()
    assert theta.shape == (200,) and torch.isfinite(theta).all()
    assert not torch.allclose(theta, torch.ones(200))  # trained from its start at 1
    keys = list(page["pyro"].get_param_store().keys())
    assert "scanvi$$$x_obs.theta" in keys or any("theta" in k for k in keys)
    assert 0.0 <= page["accuracy"] <= 1.0
    assert "recovered" in capsys.readouterr().out


def test_scanvi_page_likelihood_is_the_hand_written_zinb(page):
    """The example's ZeroInflatedNegativeBinomial (total_count theta, logits log theta - log
    l mu, the gate from its logits), in float64: equal to the observation model's."""
    obs, x = page["scanvi"].x_obs, page["x"][:6].double()
    torch.manual_seed(0)
    out = torch.randn(6, 400, dtype=torch.float64)
    library = torch.rand(6, dtype=torch.float64) * 2000 + 100
    ours = obs(out, 1, library=library).log_prob(x)
    logits, gate = out.chunk(2, -1)
    mu = library[:, None] * torch.softmax(logits, -1)
    theta = obs.theta.detach().double()
    hand = dist.ZeroInflatedNegativeBinomial(total_count=theta, logits=theta.log() - mu.log(),
                                             gate_logits=gate).to_event(1).log_prob(x)
    assert torch.allclose(ours, hand, rtol=1e-9, atol=1e-8)
